"""The trace feature's metric families (``Metrics.family``): what tracing
itself costs and loses, and the delivery rate it measures."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.features.trace.port import DeliveryCount
from tidings.observability.metrics import LabelledGauge, LoopCounter, LoopGauge, Metrics


class TraceMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.written = metrics.family(
            "tidings_trace_events_written", "Lifecycle events stored", LoopCounter()
        )
        self.dropped = metrics.family(
            "tidings_trace_events_dropped",
            "Lifecycle events lost: the buffer was full, or their batch failed to write",
            LoopCounter(),
        )
        self.write_failures = metrics.family(
            "tidings_trace_write_failures", "Batches of lifecycle events not stored", LoopCounter()
        )
        self.purged = metrics.family(
            "tidings_trace_events_purged",
            "Lifecycle events removed after the retention",
            LoopCounter(),
        )
        self.rate = metrics.family(
            "tidings_delivery_rate",
            "Share of (traced message, device written) pairs the device acknowledged within"
            " the delivery window of the ack, for messages acked one period before that window",
            LabelledGauge(LoopGauge),
            "network",
        )
        self.pairs = metrics.family(
            "tidings_delivery_pairs",
            "The (message, device) pairs the delivery rate is worked out over",
            LabelledGauge(LoopGauge),
            "network",
        )

    def delivery(self, counts: Sequence[DeliveryCount]) -> None:
        """Set the figures of the last period; networks absent from it show 0 pairs."""
        for gauge in self.pairs.children.values():
            gauge.value = 0
        for network, pairs, acknowledged in counts:
            self.pairs.labels(network).value = pairs
            self.rate.labels(network).value = acknowledged / pairs if pairs else 1.0
