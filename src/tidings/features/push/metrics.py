"""The push feature's metrics (docs/operations.md, "Metrics")."""

from __future__ import annotations

from tidings.observability.metrics import LabelledCounter, LoopCounter, LoopHistogram, Metrics

LATENCY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 300.0)


class PushMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.sent = metrics.family(
            "tidings_push_sent", "Notifications sent, by kind", LabelledCounter(), "kind"
        )
        self.collapsed = metrics.family(
            "tidings_push_collapsed",
            "Messages told in a notification together with others (one per conversation)",
            LoopCounter(),
        )
        self.skipped = metrics.family(
            "tidings_push_skipped",
            "Notifications not sent: the device had acknowledged, or the user read, the messages",
            LoopCounter(),
        )
        self.failed = metrics.family(
            "tidings_push_failed",
            "Failed sends, by what became of them (retried, gave_up, refused, error)",
            LabelledCounter(),
            "outcome",
        )
        self.removed = metrics.family(
            "tidings_push_subscriptions_removed",
            "Subscriptions removed, by why (gone: the endpoint answered 404 or 410)",
            LabelledCounter(),
            "reason",
        )
        self.latency = metrics.family(
            "tidings_push_latency_seconds",
            "Time from the first message a notification tells of to its sending",
            LoopHistogram(LATENCY_BUCKETS),
        )
