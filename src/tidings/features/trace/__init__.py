"""Lifecycle tracing: what happened to each message, stage by stage and
device by device, across nodes (``tidings trace``, ``GET /v1/admin/trace/{id}``)
and the delivery rate worked out from it.

The recording hooks are in the core and the gateway (``core/trace.py``'s
:class:`~tidings.core.trace.Tracer`, called on the send path, the fan-out,
redelivery and the cursor frames); this package turns the tracer on, writes
its buffer in batches (``flusher.py``) to its own table on the store's
database (``sqlite.py``, ``postgres.py``), purges it, and reads it back
(``lifecycle.py``, ``routes.py``). docs/architecture.md, "Lifecycle tracing",
has the trade-offs.
"""

from __future__ import annotations

import secrets
import socket

from tidings.core.ports.store.engine import EngineHandle
from tidings.features import Feature, FeatureContext, Plugin
from tidings.features.trace.flusher import Flusher
from tidings.features.trace.lifecycle import TraceReader
from tidings.features.trace.metrics import TraceMetrics
from tidings.features.trace.port import TraceStore
from tidings.features.trace.postgres import PostgresTraceStore
from tidings.features.trace.routes import TraceRoutes
from tidings.features.trace.settings import TraceSettings
from tidings.features.trace.sqlite import SqliteTraceStore
from tidings.settings import Settings


def trace_store(database: EngineHandle) -> TraceStore:
    """The trace table's backend on the store's database (also for ``tidings trace``)."""
    if database.engine == "sqlite":
        return SqliteTraceStore(database)
    return PostgresTraceStore(database)


def node_name(own: TraceSettings, settings: Settings) -> str:
    """The ``node`` setting, else the host name and configured port with a
    random suffix: two nodes on one host (a port chosen by the system, a
    shared ``SO_REUSEPORT`` port, nodes of a test) must not share a name."""
    if own.node:
        return own.node
    return f"{socket.gethostname()}:{settings.port}~{secrets.token_hex(2)}"


def _plug(context: FeatureContext) -> Plugin:
    own: TraceSettings = context.own
    store = trace_store(context.database)
    routes = TraceRoutes(TraceReader(store), context.store, context.settings.moderators).routes()
    if not own.enabled:
        return Plugin(routes=routes)
    single = context.settings.bus.startswith("memory://")
    rate = own.sample_rate if single else own.cluster_sample_rate
    context.tracer.enable(node_name(own, context.settings), rate, own.buffer_events)
    flusher = Flusher(context.tracer, store, own, TraceMetrics(context.metrics))
    return Plugin(routes=routes, start=flusher.start, stop=flusher.stop)


TRACE = Feature("trace", settings=TraceSettings, migrations="tidings.features.trace", plug=_plug)
