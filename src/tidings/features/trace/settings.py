"""The trace feature's settings: ``[tidings.trace]`` and ``TIDINGS_TRACE_*``
(docs/operations.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TraceSettings:
    enabled: bool = False
    """Record lifecycle events (``tidings trace``); off: the hooks cost one test each.
    Off by default: tracing every message costs a single SQLite node about a
    quarter of its 1:1 throughput (docs/benchmarks.md, "Lifecycle tracing")."""
    sample_rate: float = 1.0
    """Share of messages traced on a single node (the in-process bus): all of them."""
    cluster_sample_rate: float = 0.1
    """Share of messages traced on a cluster (a Redis bus), chosen by a hash of
    the message that every node computes alike."""
    retention_s: int = 259_200
    """How long events are kept (three days); older ones are purged."""
    flush_ms: int = 250
    """How often the node writes its buffered events, in one batch."""
    buffer_events: int = 100_000
    """Events held between two writes; beyond, new ones are dropped and counted."""
    purge_interval_s: int = 60
    """How often events past the retention are removed (also the delivery-rate period)."""
    delivery_window_s: int = 300
    """N in the delivery rate: a message counts as delivered to a device that
    acknowledged it (``delivered``) within this long of its ``ack``."""
    node: str = ""
    """This node's name in traces; empty: the host name and port with a random
    suffix (unique, but new at every start)."""

    def __post_init__(self) -> None:
        for name in ("sample_rate", "cluster_sample_rate"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise ValueError(f"trace setting {name} must be between 0 and 1, not {rate}")
        for name in (
            "retention_s",
            "flush_ms",
            "buffer_events",
            "purge_interval_s",
            "delivery_window_s",
        ):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"trace setting {name} must be positive, not {value}")
