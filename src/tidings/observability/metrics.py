"""Prometheus metrics for every stage of a message's life.

Each app owns its registry (so that several nodes can live in one test
process). Labelled children used on the hot path are bound once here, so a
fan-out to 1000 connections costs one counter increment, not a thousand label
lookups.

The values are plain numbers bumped on the node's event-loop thread (which is
the only thread that touches them) and read by a collector when ``/metrics``
is scraped. prometheus_client's own metric classes take a lock on every
increment, and a message makes several increments, so the locks were a large
share of the event loop's time under load, for a thread that never shares
them (docs/benchmarks.md, "What changed on 2026-12-02, and what it measured"
has the figures).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidings.core.frames import CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES
from tidings.core.ids import now_ms

# Ack latency buckets: a group commit is a few ms; anything past a second is an incident.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopCounter:
    """A count that only goes up; bumped from the event loop's thread only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopGauge(LoopCounter):
    """A value that goes up and down (open connections)."""

    __slots__ = ()

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class LabelledCounter:
    """A counter family with one label; a child per value, created on first use."""

    def __init__(self) -> None:
        self.children: dict[str, LoopCounter] = {}

    def labels(self, value: str) -> LoopCounter:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = LoopCounter()
        return child


class LoopLag:
    """Seconds since the oldest piece of work still waiting was stored (0 when
    nothing waits). Worked out when scraped, so the lag of a stuck worker
    keeps growing between its (absent) updates."""

    __slots__ = ("waiting_since_ms",)

    def __init__(self) -> None:
        self.waiting_since_ms: int | None = None

    @property
    def value(self) -> float:
        since = self.waiting_since_ms
        return 0.0 if since is None else max(0.0, (now_ms() - since) / 1000)


class _Valued(Protocol):
    @property
    def value(self) -> float: ...


G = TypeVar("G", bound=_Valued)


class LabelledGauge(Generic[G]):
    """A gauge family with one label; a child per value, created on first use."""

    def __init__(self, child: Callable[[], G]) -> None:
        self._child = child
        self.children: dict[str, G] = {}

    def labels(self, value: str) -> G:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = self._child()
        return child


class LoopHistogram:
    """Counts of observations per bucket (not cumulative until collected) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return buckets


class KeyedCounter:
    """A counter family with several labels (``names``); a child per combination."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.children: dict[tuple[str, ...], LoopCounter] = {}

    def labels(self, *values: str) -> LoopCounter:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = LoopCounter()
        return child


class LabelledHistogram:
    """A histogram family with one label; a child per value, created on first use."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.children: dict[str, LoopHistogram] = {}

    def labels(self, value: str) -> LoopHistogram:
        child = self.children.get(value)
        if child is None:
            child = self.children[value] = LoopHistogram(self.bounds)
        return child


LoopMetric = (
    LoopCounter
    | LabelledCounter
    | LabelledGauge[LoopGauge]
    | LabelledGauge[LoopLag]
    | LoopHistogram
    | KeyedCounter
    | LabelledHistogram
)
_Described = tuple[str, str, str, LoopMetric]  # name, help, label name, metric
M = TypeVar("M", bound=LoopMetric)


class _Collector(Collector):
    """Turns the loop-side values into Prometheus families at scrape time."""

    def __init__(self, described: list[_Described]) -> None:
        self._described = described

    def collect(self) -> Iterator[Metric]:
        for name, doc, label, metric in self._described:
            if isinstance(metric, LoopGauge):
                yield GaugeMetricFamily(name, doc, value=metric.value)
            elif isinstance(metric, LoopCounter):
                yield CounterMetricFamily(name, doc, value=metric.value)
            elif isinstance(metric, LabelledCounter):
                family = CounterMetricFamily(name, doc, labels=[label])
                for value, child in sorted(metric.children.items()):
                    family.add_metric([value], child.value)
                yield family
            elif isinstance(metric, LabelledGauge):
                gauges = GaugeMetricFamily(name, doc, labels=[label])
                for value in sorted(metric.children):
                    gauges.add_metric([value], metric.children[value].value)
                yield gauges
            elif isinstance(metric, KeyedCounter):
                keyed = CounterMetricFamily(name, doc, labels=list(metric.names))
                for values, counter in sorted(metric.children.items()):
                    keyed.add_metric(list(values), counter.value)
                yield keyed
            elif isinstance(metric, LabelledHistogram):
                histograms = HistogramMetricFamily(name, doc, labels=[label])
                for value in sorted(metric.children):
                    histogram = metric.children[value]
                    histograms.add_metric([value], histogram.cumulative(), histogram.sum)
                yield histograms
            else:
                yield HistogramMetricFamily(
                    name, doc, buckets=metric.cumulative(), sum_value=metric.sum
                )


_FAMILIES = (
    # (attribute, Prometheus name, help, label name)
    ("connections", "tidings_connections_open", "Open WebSocket connections", ""),
    ("frames_in", "tidings_frames_in", "Client frames received, by type", "type"),
    ("frames_out", "tidings_frames_out", "Frames sent to clients, by type", "type"),
    ("messages_persisted", "tidings_messages_persisted", "Messages durably stored", ""),
    (
        "frames_in_flight",
        "tidings_frames_in_flight",
        "Sends and cursor moves received and not yet answered",
        "",
    ),
    (
        "ack_latency",
        "tidings_ack_latency_seconds",
        "Time from receiving a send to acknowledging it (durable)",
        "",
    ),
    (
        "handshake_latency",
        "tidings_handshake_seconds",
        "Time from an admitted WebSocket upgrade to its welcome (hello, token, conversations)",
        "",
    ),
    ("errors", "tidings_errors", "Errors returned to clients, by code", "code"),
    (
        "slow_consumers",
        "tidings_slow_consumer_disconnects",
        "Connections cut because their send buffer overflowed",
        "",
    ),
    (
        "redelivered",
        "tidings_redelivered",
        "Live messages re-sent because the connection did not acknowledge them",
        "",
    ),
    (
        "repaired",
        "tidings_repaired",
        "Messages pushed from the store to live connections after a bus gap",
        "",
    ),
    ("bus_gaps", "tidings_bus_gaps", "Times the bus reconnected after losing messages", ""),
    (
        "handshakes_refused",
        "tidings_handshakes_refused",
        "WebSocket upgrades answered 503 (draining, over the admission rate or concurrency)",
        "reason",
    ),
    (
        "changelog_lag",
        "tidings_changelog_lag_seconds",
        "Age of the oldest stored message a change-log worker has not handled (0: caught up)",
        "worker",
    ),
    (
        "changelog_behind",
        "tidings_changelog_positions_behind",
        "Change-stream positions between a worker's saved position and the stream's head",
        "worker",
    ),
    (
        "retention_purged",
        "tidings_retention_purged",
        "Entries removed by the retention purge (expired under the retention policy)",
        "",
    ),
    (
        "changelog_handled",
        "tidings_changelog_handled",
        "Changes handed to a change-log worker (a retried batch counts again)",
        "worker",
    ),
    (
        "changelog_failures",
        "tidings_changelog_failures",
        "Times a change-log worker's batch or the store failed (retried after a backoff)",
        "worker",
    ),
)


class Metrics:
    def __init__(self) -> None:
        self.connections = LoopGauge()
        self.frames_in = LabelledCounter()
        self.frames_out = LabelledCounter()
        self.messages_persisted = LoopCounter()
        self.frames_in_flight = LoopGauge()
        self.ack_latency = LoopHistogram(ACK_BUCKETS)
        self.handshake_latency = LoopHistogram(ACK_BUCKETS)
        self.errors = LabelledCounter()
        self.slow_consumers = LoopCounter()
        self.redelivered = LoopCounter()
        self.repaired = LoopCounter()
        self.bus_gaps = LoopCounter()
        self.handshakes_refused = LabelledCounter()
        self.changelog_lag = LabelledGauge(LoopLag)
        self.changelog_behind = LabelledGauge(LoopGauge)
        self.changelog_handled = LabelledCounter()
        self.retention_purged = LoopCounter()
        self.changelog_failures = LabelledCounter()
        self.registry = CollectorRegistry()
        self._described: list[_Described] = [
            (name, doc, label, getattr(self, attr)) for attr, name, doc, label in _FAMILIES
        ]
        self.registry.register(_Collector(self._described))
        self.frames_in_by_type = {t: self.frames_in.labels(t) for t in CLIENT_FRAME_TYPES}
        self.frames_in_other = self.frames_in.labels("other")
        self.frames_out_by_type = {t: self.frames_out.labels(t) for t in SERVER_FRAME_TYPES}

    def family(self, name: str, doc: str, metric: M, label: str = "") -> M:
        """Add a feature's own family (a feature owns its metrics; the core's are
        above) and return it; ``label`` names the label of a labelled one."""
        if any(described[0] == name for described in self._described):
            raise ValueError(f"metric {name} is registered twice")
        self._described.append((name, doc, label, metric))
        return metric

    def frame_in(self, kind: str) -> None:
        self.frames_in_by_type.get(kind, self.frames_in_other).inc()

    def frame_out(self, kind: str, count: int = 1) -> None:
        self.frames_out_by_type[kind].inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
