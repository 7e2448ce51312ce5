"""Features: each one package that plugs into a node by registration.

A :class:`Feature` declares what must be known before the node exists (its
content kinds, its settings type, its migrations); its ``plug`` function
gets the node's services (:class:`FeatureContext`) and returns what runs
with the node (:class:`Plugin`: HTTP routes, change-log workers, readiness
checks, start and stop). ``tidings.app`` builds a node from a list of
features and the core knows them only through those registries: the
content kinds in ``ChatService.content_kinds``, the schema components in the
store, the routes in the HTTP application and ``/openapi.json``, the checks
in ``/readyz``. See "Adding a feature" in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidings.core.auth import AuthService
from tidings.core.content_kinds import ContentKind
from tidings.core.ports.bus import Bus
from tidings.core.ports.store.composite import Store
from tidings.core.ports.store.engine import EngineHandle
from tidings.core.publisher import Publisher
from tidings.core.service import ChatService
from tidings.core.trace import Tracer
from tidings.core.workers import ChangeWorker
from tidings.http.ops import Readiness
from tidings.http.routes import AnyRoute
from tidings.observability.metrics import Metrics
from tidings.settings import Settings

Probe = Callable[[], Awaitable[None]]
"""Answers if a dependency works; raises (a ``TidingsError`` says why best) if not."""


@dataclass(frozen=True)
class ReadinessCheck:
    """One line of ``/readyz``: ``critical`` checks failing make the node unready
    (a balancer pulls it); the others are reported only (the feature degrades)."""

    name: str
    probe: Probe
    critical: bool = True


@dataclass(frozen=True)
class FeatureContext:
    """What a feature's ``plug`` may use of the node: its services and its own settings."""

    settings: Settings
    own: Any
    """This feature's settings (an instance of ``Feature.settings``), or None."""
    store: Store
    database: EngineHandle
    """The store's database, for the feature's own backend (narrow on ``engine``)."""
    bus: Bus
    publisher: Publisher
    """Publishes bus events and holds them while the bus is down (``core/publisher.py``)."""
    service: ChatService
    auth: AuthService
    metrics: Metrics
    readiness: Readiness
    routes: Callable[[], Sequence[AnyRoute]]
    """Every HTTP route of the node once it is built (what ``/openapi.json`` documents)."""
    tracer: Tracer
    """The node's lifecycle events, off until a feature enables it (``core/trace.py``)."""


@dataclass(frozen=True)
class Plugin:
    """What a plugged feature runs with the node; started in feature order, stopped in reverse."""

    routes: Sequence[AnyRoute] = ()
    workers: Sequence[ChangeWorker] = ()
    checks: Sequence[ReadinessCheck] = ()
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


def _nothing(_: FeatureContext) -> Plugin:
    return Plugin()


@dataclass(frozen=True)
class Feature:
    """One feature, as a node composes it.

    ``settings``: a frozen dataclass read from ``[tidings.<name>]`` and
    ``TIDINGS_<NAME>_*`` (``tidings.settings.load_section``). ``migrations``:
    the package whose ``migrations/`` folder holds its ``sqlite_NNN_*.sql`` and
    ``postgres_NNN_*.sql`` files, versioned under ``name``.
    """

    name: str
    content_kinds: Sequence[ContentKind[Any]] = ()
    settings: type[Any] | None = None
    migrations: str | None = None
    plug: Callable[[FeatureContext], Plugin] = _nothing
