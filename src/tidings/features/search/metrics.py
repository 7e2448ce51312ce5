"""The search feature's metrics (docs/operations.md, "Metrics")."""

from __future__ import annotations

from tidings.observability.metrics import (
    ACK_BUCKETS,
    LabelledCounter,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
    Metrics,
)


class SearchMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.queries = metrics.family(
            "tidings_search_queries",
            "Search calls answered, by path: index, or store (the slower path)",
            LabelledCounter(),
            "source",
        )
        self.latency = metrics.family(
            "tidings_search_seconds",
            "Time to answer a search call (either path)",
            LoopHistogram(ACK_BUCKETS),
        )
        self.degraded = metrics.family(
            "tidings_search_degraded",
            "1 while the search index is being rebuilt and searches answer from the store",
            LoopGauge(),
        )
        self.rebuilds = metrics.family(
            "tidings_search_rebuilds", "Search index rebuilds started", LoopCounter()
        )
