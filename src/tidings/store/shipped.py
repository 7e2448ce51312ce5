"""Finding migration files, for the core schema and for features' schemas.

Both engines number their files the same way (``<engine>_NNN_name.sql`` in
a package's ``migrations/`` folder); one reader keeps the rule in one place.
"""

from __future__ import annotations

import re
from importlib import resources

COMPONENT_TABLE = (
    "CREATE TABLE IF NOT EXISTS component_schema ("
    " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL, PRIMARY KEY (component, version))"
)
"""The version namespace of features' migrations (valid SQLite and PostgreSQL);
the core's own stays in ``schema_version``, which restores and
``tidings migrate`` read."""


def shipped(package: str, engine: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration of ``engine`` in ``package``, in order."""
    pattern = re.compile(rf"^{engine}_(\d{{3}})_[a-z0-9_]+\.sql$")
    folder = resources.files(package).joinpath("migrations")
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    return found
