"""The composition root: builds every service from the settings, once.

Nothing else in the package constructs backends or reads settings globally;
tests build a node by calling :func:`build_node` with other settings or
backends (for instance two nodes sharing one in-process bus hub).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from tidings.bus.memory import MemoryBus
from tidings.bus.store_relay import AnnouncementRelay
from tidings.changelog.runner import RunnerOptions
from tidings.changelog.workers import ChangeWorkers
from tidings.core.accounts import AccountService
from tidings.core.auth import AuthService
from tidings.core.errors import TidingsError
from tidings.core.membership import MemberCache
from tidings.core.ports.bus import Bus
from tidings.core.ports.presence import PresenceStore
from tidings.core.ports.store.composite import Store
from tidings.core.publisher import Publisher
from tidings.core.schema import SchemaComponent
from tidings.core.service import ChatService
from tidings.core.trace import Tracer
from tidings.core.workers import ChangeWorker
from tidings.features import Feature, FeatureContext
from tidings.features.host import Plugged, content_kinds_of, schema_of
from tidings.features.messaging import MESSAGING
from tidings.features.ops import OPS
from tidings.features.push import PUSH
from tidings.features.search import SEARCH
from tidings.features.text import TEXT
from tidings.features.trace import TRACE
from tidings.gateway.fanout import Fanout
from tidings.gateway.presence import PresenceHub
from tidings.gateway.receipts import ReceiptAggregator
from tidings.gateway.redelivery import Redeliverer
from tidings.gateway.registry import LocalRegistry
from tidings.gateway.server import WS_PATH, Gateway
from tidings.gateway.session import SessionHandler
from tidings.http.acceptor import BatchAcceptor
from tidings.http.api import HttpApi
from tidings.http.respond import CATCH_ALL, guarded, no_such_route
from tidings.http.routes import AnyRoute, Binder
from tidings.observability.metrics import Metrics
from tidings.observability.network_metrics import NetworkMetrics
from tidings.presence.memory import MemoryPresence
from tidings.settings import REDIS_SCHEMES, Settings, load_section

log = logging.getLogger("tidings.app")

LOCAL_PRESENCE = (
    "presence is in this node's memory (presence = memory://) while the bus is Redis:"
    " users connected to other nodes look offline here; leave presence unset to share"
    " the bus's Redis"
)
"""Why presence on this node cannot be trusted across the cluster: said at start
and by /readyz, since nothing else would show it (every probe answers)."""

BUILT_IN: tuple[Feature, ...] = (TEXT, MESSAGING, SEARCH, PUSH, TRACE, OPS)
"""Features every node has: the ``text`` kind, what people expect of a chat
(edits, deletes, reactions, hidden messages, settings, retention), search,
push notifications, lifecycle tracing and the operator routes."""


def open_store(settings: Settings, components: Sequence[SchemaComponent] = ()) -> Store:
    url = settings.store_url
    if url.startswith("sqlite:///"):
        from tidings.store.sqlite import SqliteStore

        return SqliteStore.from_url(
            url, settings.sqlite_synchronous, settings.sqlite_busy_timeout_ms, components
        )
    if url.startswith(("postgresql://", "postgres://")):
        from tidings.store.postgres import PostgresStore

        return PostgresStore.from_url(url, components)
    raise ValueError(f"unsupported store URL {url!r} (supported: sqlite:///PATH, postgresql://...)")


def open_presence(settings: Settings) -> PresenceStore:
    url = settings.presence_url
    if url.startswith("memory://"):
        return MemoryPresence()
    if url.startswith(REDIS_SCHEMES):
        from tidings.presence.redis import RedisPresence

        return RedisPresence(url, prefix=settings.bus_prefix + "presence:")
    raise ValueError(f"unsupported presence URL {url!r} (supported: memory://, redis://)")


def is_in_process(settings: Settings) -> bool:
    """Whether the bus is the node's own (``memory://``): no other process can
    publish on it, so admin commands announce through the store instead."""
    return settings.bus.startswith("memory://")


def open_bus(settings: Settings) -> Bus:
    if is_in_process(settings):
        return MemoryBus()
    if settings.bus.startswith(REDIS_SCHEMES):
        from tidings.bus.redis import RedisBus

        return RedisBus.from_url(settings.bus, prefix=settings.bus_prefix)
    raise ValueError(f"unsupported bus URL {settings.bus!r} (supported: memory://, redis://)")


@dataclass
class Node:
    """Everything one server process runs, wired together."""

    settings: Settings
    store: Store
    bus: Bus
    metrics: Metrics
    publisher: Publisher
    service: ChatService
    auth: AuthService
    accounts: AccountService
    gateway: Gateway
    fanout: Fanout
    aggregator: ReceiptAggregator
    presence: PresenceHub
    changelog: ChangeWorkers
    tracer: Tracer
    """Lifecycle events of this node's messages (``core/trace.py``); the trace feature drains it."""
    features: Plugged = field(default_factory=Plugged)
    relay: AnnouncementRelay | None = None
    """Publishes admin commands' announcements on an in-process bus (``bus/store_relay.py``)."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @functools.cached_property
    def routes(self) -> list[AnyRoute]:
        """Every HTTP route the node serves: the API's, then each feature's."""
        api = HttpApi(self.service, self.auth, self.accounts, self.tracer).routes()
        return [*api, *self.features.routes]

    async def start(self) -> None:
        await self.store.start()
        await self.bus.start(self.fanout.on_bus, self._on_bus_gap)
        await self.presence.open()
        await self.gateway.load_restore_notice()
        self.gateway.start()
        self.aggregator.start()
        await self.features.start()
        self.changelog.start()
        if self.relay is not None:
            await self.relay.start()
        log.info(
            "node started", extra={"epoch": self.store.epoch, "store": self.settings.store_url}
        )
        if self.settings.presence_local_only:
            log.warning(LOCAL_PRESENCE)

    def _on_bus_gap(self) -> None:
        """The bus came back after losing messages: publish what this node held
        back, then give every local connection what it missed (AT1: live
        delivery paused during the partition; the store had everything)."""
        self.metrics.bus_gaps.inc()
        task = asyncio.get_running_loop().create_task(self._heal())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heal(self) -> None:
        try:
            # A connection may get a message twice here (the republished
            # event and the repair); clients deduplicate by (conversation, seq)
            # as the protocol requires, and nothing can be missed.
            published = await self.publisher.republish()
            repaired = await self.gateway.repair()
            log.info(
                "healed after a bus gap", extra={"republished": published, "repaired": repaired}
            )
        except Exception:
            log.exception("healing after a bus gap failed")

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        await self.gateway.stop()
        await self.changelog.stop()
        await self.features.stop()
        await self.presence.close()
        await self.publisher.close()
        await self.aggregator.stop()
        await self.fanout.close()
        await self.bus.close()
        await self.store.close()

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready means store and bus answer and the node is not draining.

        Presence is reported but does not make the node unready: without it
        chat works (presence and typing degrade), so a balancer must not pull
        the node. For the same reason presence kept in memory on a cluster is
        reported as ``local only`` rather than failing readiness: every node
        of such a cluster is configured alike, and pulling them all would stop
        chat over a presence mistake. Features' checks follow; only their
        critical ones count.
        """
        checks: dict[str, str] = {}
        if self.gateway.draining:
            checks["gateway"] = "draining"
        probes = (
            ("store", self.store.ping),
            ("bus", self.bus.ping),
            ("presence", self.presence.ping),
            *((check.name, check.probe) for check in self.features.checks),
        )
        for name, probe in probes:
            try:
                await probe()
                checks[name] = "ok"
            except TidingsError as exc:
                checks[name] = exc.message
            except Exception as exc:
                checks[name] = f"error: {exc}"
        if checks["presence"] != "ok":
            checks["presence"] = f"degraded (chat unaffected): {checks['presence']}"
        elif self.settings.presence_local_only:
            checks["presence"] = f"local only: {LOCAL_PRESENCE}"
        critical = ("store", "bus", *(c.name for c in self.features.checks if c.critical))
        ready = all(checks[name] == "ok" for name in critical) and not self.gateway.draining
        return ready, checks


NODE_KEY = web.AppKey("tidings_node", Node)


def build_node(
    settings: Settings,
    store: Store | None = None,
    bus: Bus | None = None,
    features: Sequence[Feature] = (),
    config_file: str | None = None,
    workers: Sequence[ChangeWorker] = (),
) -> Node:
    """A node with the built-in features and ``features`` (whose settings are
    read from ``config_file`` and the environment). The features' workers and
    ``workers`` follow the store's change log while it runs (none by default:
    then nothing extra runs)."""
    every = (*BUILT_IN, *features)
    store = store if store is not None else open_store(settings, schema_of(every))
    bus = bus if bus is not None else open_bus(settings)
    metrics = Metrics()
    publisher = Publisher(bus)
    service = ChatService(
        store, publisher, settings, content_kinds_of(every), metrics.messages_persisted.inc
    )
    auth = AuthService(store, settings.password_hash_memory_kib, settings.password_hash_time_cost)
    accounts = AccountService(store, publisher)
    registry = LocalRegistry(bus)
    members = MemberCache(store, settings.member_cache_size)
    presence = PresenceHub(open_presence(settings), bus, registry, members, metrics, settings)
    tracer = Tracer()
    network = NetworkMetrics(metrics)
    handler = SessionHandler(service, auth, registry, metrics, settings, presence, tracer, network)
    redeliverer = Redeliverer(service, metrics, settings.redelivery_ms / 1000, tracer, network)
    gateway = Gateway(handler, registry, metrics, settings, redeliverer, presence, network)
    aggregator = ReceiptAggregator(
        service, registry, metrics, settings.receipt_summary_interval_ms / 1000
    )
    fanout = Fanout(
        registry,
        members,
        metrics,
        settings.receipt_detail_max_members,
        aggregator,
        gateway.close_sessions,
        presence,
        tracer,
    )
    changelog = ChangeWorkers(store, metrics, RunnerOptions.from_settings(settings))
    node = Node(
        settings,
        store,
        bus,
        metrics,
        publisher,
        service,
        auth,
        accounts,
        gateway,
        fanout,
        aggregator,
        presence,
        changelog,
        tracer,
    )
    node.features = Plugged(
        [feature.plug(_context(node, feature, config_file)) for feature in every]
    )
    for worker in [*node.features.workers, *workers]:
        changelog.register(worker)
    if is_in_process(settings):
        node.relay = AnnouncementRelay(store, bus, settings.announcement_poll_ms)
    return node


def _context(node: Node, feature: Feature, config_file: str | None) -> FeatureContext:
    own = None
    if feature.settings is not None:
        own = load_section(feature.settings, feature.name, config_file, os.environ)
    return FeatureContext(
        node.settings,
        own,
        node.store,
        node.store.engine_access(),
        node.bus,
        node.publisher,
        node.service,
        node.auth,
        node.metrics,
        node.readiness,
        lambda: node.routes,
        node.tracer,
    )


def create_app(node: Node) -> web.Application:
    """The aiohttp application serving HTTP and WebSocket for one node."""
    app = web.Application(
        client_max_size=node.settings.max_frame_bytes,
    )
    app[NODE_KEY] = node
    binder = Binder(node.metrics, node.auth, node.settings.max_frame_bytes)
    app.add_routes([binder.route_def(route) for route in node.routes])
    app.add_routes(
        [
            web.get(WS_PATH, node.gateway.handle),
            web.route("*", CATCH_ALL, guarded(node.metrics, no_such_route)),
        ]
    )

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop()

    async def close_sessions(_: web.Application) -> None:
        # aiohttp waits for running handlers before cleanup: close the
        # WebSockets first, or shutdown would wait for heartbeat timeouts.
        await node.gateway.stop()

    app.on_shutdown.append(close_sessions)
    app.cleanup_ctx.append(lifecycle)
    return app


def open_acceptor(node: Node, server: web.Server, settings: Settings) -> BatchAcceptor:
    """The node's listening socket with its batch acceptor (not started):
    refused upgrades are answered at accept (the gateway's screen) and, on a
    shared port, a node with no room steps off it so that new connections
    reach the nodes that have some (http/acceptor.py)."""
    return BatchAcceptor(
        settings.host,
        settings.port,
        server,
        reuse_port=settings.reuse_port,
        room=node.gateway.room if settings.reuse_port else None,
        rejoin_at=node.gateway.rejoin_room,
        screen=node.gateway.screen,
    )
