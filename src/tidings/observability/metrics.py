"""Prometheus metrics for every stage of a message's life.

Each app owns its registry (so that several nodes can live in one test
process). Labelled children used on the hot path are bound once here, so a
fan-out to 1000 connections costs one counter increment, not a thousand label
lookups.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tidings.core.frames import CLIENT_FRAME_TYPES

SERVER_FRAME_TYPES = (
    "welcome",
    "ack",
    "msg",
    "sync_done",
    "receipt",
    "receipt_summary",
    "typing",
    "presence",
    "pong",
    "reconnect",
    "error",
)
# Ack latency buckets: a group commit is a few ms; anything past a second is an incident.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "tidings_connections_open", "Open WebSocket connections", registry=r
        )
        self.frames_in = Counter(
            "tidings_frames_in_total", "Client frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "tidings_frames_out_total", "Frames sent to clients, by type", ["type"], registry=r
        )
        self.messages_persisted = Counter(
            "tidings_messages_persisted_total", "Messages durably stored", registry=r
        )
        self.ack_latency = Histogram(
            "tidings_ack_latency_seconds",
            "Time from receiving a send to acknowledging it (durable)",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.handshake_latency = Histogram(
            "tidings_handshake_seconds",
            "Time from an admitted WebSocket upgrade to its welcome (hello, token, conversations)",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "tidings_errors_total", "Errors returned to clients, by code", ["code"], registry=r
        )
        self.slow_consumers = Counter(
            "tidings_slow_consumer_disconnects_total",
            "Connections cut because their send buffer overflowed",
            registry=r,
        )
        self.redelivered = Counter(
            "tidings_redelivered_total",
            "Live messages re-sent because the connection did not acknowledge them",
            registry=r,
        )
        self.repaired = Counter(
            "tidings_repaired_total",
            "Messages pushed from the store to live connections after a bus gap",
            registry=r,
        )
        self.bus_gaps = Counter(
            "tidings_bus_gaps_total", "Times the bus reconnected after losing messages", registry=r
        )
        self.handshakes_refused = Counter(
            "tidings_handshakes_refused_total",
            "WebSocket upgrades answered 503 (draining, over the admission rate or concurrency)",
            ["reason"],
            registry=r,
        )
        self.frames_in_by_type = {t: self.frames_in.labels(t) for t in CLIENT_FRAME_TYPES}
        self.frames_in_other = self.frames_in.labels("other")
        self.frames_out_by_type = {t: self.frames_out.labels(t) for t in SERVER_FRAME_TYPES}

    def frame_in(self, kind: str) -> None:
        self.frames_in_by_type.get(kind, self.frames_in_other).inc()

    def frame_out(self, kind: str, count: int = 1) -> None:
        self.frames_out_by_type[kind].inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
