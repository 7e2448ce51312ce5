"""Metrics split by the client's network type (``hello.client.network``).

Mobile networks lose more than WiFi; these families say where. The label
takes the values the codec admits (``core/trace.py`` ``NETWORKS``), so its
cardinality is bounded; a connection that did not say is ``unknown``.
Children are bound once per network here, so the gateway's paths pay a dict
lookup, not a label lookup per message.
"""

from __future__ import annotations

from tidings.core.trace import NETWORKS
from tidings.observability.metrics import (
    ACK_BUCKETS,
    KeyedCounter,
    LabelledCounter,
    LabelledHistogram,
    LoopCounter,
    LoopHistogram,
    Metrics,
)

# From a fast acknowledgement to one that took a reconnect.
CLIENT_ACK_BUCKETS = (*ACK_BUCKETS, 10.0, 30.0, 60.0)
SYNC_BUCKETS = (0.0, 1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0)

SEND_OUTCOMES = ("stored", "duplicate", "refused")
"""``duplicate``: a retry of a send already stored, so its first ``ack`` was
lost on the way; ``refused``: answered with an error."""


class NetworkMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.drops = metrics.family(
            "tidings_connection_drops",
            "Sessions ended, by client network and reason",
            KeyedCounter("network", "reason"),
        )
        sends = metrics.family(
            "tidings_sends",
            "WebSocket sends answered, by client network and outcome",
            KeyedCounter("network", "outcome"),
        )
        redelivered = metrics.family(
            "tidings_redelivered_by_network",
            "Live messages re-sent because the connection did not acknowledge them",
            LabelledCounter(),
            "network",
        )
        client_ack = metrics.family(
            "tidings_client_ack_seconds",
            "Time from writing a live message to the delivered (or read) that covers it",
            LabelledHistogram(CLIENT_ACK_BUCKETS),
            "network",
        )
        sync_sizes = metrics.family(
            "tidings_sync_messages",
            "Messages returned by one sync",
            LabelledHistogram(SYNC_BUCKETS),
            "network",
        )
        self.sends: dict[str, dict[str, LoopCounter]] = {
            net: {outcome: sends.labels(net, outcome) for outcome in SEND_OUTCOMES}
            for net in NETWORKS
        }
        self.redelivered: dict[str, LoopCounter] = {n: redelivered.labels(n) for n in NETWORKS}
        self.client_ack: dict[str, LoopHistogram] = {n: client_ack.labels(n) for n in NETWORKS}
        self.sync_sizes: dict[str, LoopHistogram] = {n: sync_sizes.labels(n) for n in NETWORKS}

    def dropped(self, network: str, reason: str) -> None:
        self.drops.labels(network, reason).inc()
