"""The node's side of features: turning a list of them into what the node runs.

Kept apart from ``tidings.app`` so that the composition root only says which
features a node has; how their parts are collected, started and probed is here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.core.content_kinds import ContentKinds
from tidings.core.schema import SchemaComponent
from tidings.core.workers import ChangeWorker
from tidings.features import Feature, Plugin, ReadinessCheck
from tidings.http.routes import AnyRoute


def content_kinds_of(features: Sequence[Feature]) -> ContentKinds:
    """The content kinds of a node with ``features`` (and the core's own)."""
    return ContentKinds(kind for feature in features for kind in feature.content_kinds)


def schema_of(features: Sequence[Feature]) -> list[SchemaComponent]:
    """The features' migrations, as the store applies them (in feature order)."""
    return [SchemaComponent(f.name, f.migrations) for f in features if f.migrations is not None]


@dataclass(frozen=True)
class Plugged:
    """The plugins of a node's features, in feature order."""

    plugins: Sequence[Plugin] = ()

    @property
    def routes(self) -> list[AnyRoute]:
        return [route for plugin in self.plugins for route in plugin.routes]

    @property
    def workers(self) -> list[ChangeWorker]:
        """For the change-log runner (``tidings.changelog``)."""
        return [worker for plugin in self.plugins for worker in plugin.workers]

    @property
    def checks(self) -> list[ReadinessCheck]:
        return [check for plugin in self.plugins for check in plugin.checks]

    async def start(self) -> None:
        for plugin in self.plugins:
            if plugin.start is not None:
                await plugin.start()

    async def stop(self) -> None:
        for plugin in reversed(self.plugins):
            if plugin.stop is not None:
                await plugin.stop()


def load_features(spec: str) -> list[Feature]:
    """The features named in ``spec`` (the ``features`` setting): comma-separated
    ``package.module:NAME``, where NAME is a :class:`Feature` or a function of no
    arguments that returns one. Raises ``ValueError`` saying which one is wrong."""
    found: list[Feature] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        module_name, _, attribute = item.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"feature {item!r} is not of the form package.module:NAME")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"feature {item!r} cannot be loaded: {exc}") from None
        feature = value() if callable(value) and not isinstance(value, Feature) else value
        if not isinstance(feature, Feature):
            raise ValueError(f"feature {item!r} is not a tidings.features.Feature")
        found.append(feature)
    return found
