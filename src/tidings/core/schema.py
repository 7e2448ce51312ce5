"""A feature's own tables, as the store backends see them.

A feature that keeps data names a package holding a ``migrations/`` folder of
``sqlite_NNN_name.sql`` and ``postgres_NNN_name.sql`` files; each store
backend applies them after its own schema, numbered in the feature's own
version namespace (the ``component_schema`` table, keyed by component and
version), so a feature's migration 001 never collides with the core's or
another feature's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SchemaComponent:
    """``name``: the version namespace (the feature's name); ``package``: where
    its ``migrations/`` folder is (an importable package, e.g. ``tidings.features.search``)."""

    name: str
    package: str
