"""The metrics the loop keeps are exposed as Prometheus families when scraped."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidings.observability.metrics import ACK_BUCKETS, Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_gauge_and_labelled_families_render() -> None:
    metrics = Metrics()
    metrics.frame_in("send")
    metrics.frame_in("send")
    metrics.frame_in("no-such-type")
    metrics.frame_out("msg", 999)
    metrics.errors.labels("bad_frame").inc()
    metrics.connections.inc()
    metrics.connections.inc()
    metrics.connections.dec()
    metrics.messages_persisted.inc(3)
    samples = _samples(metrics)
    assert samples[("tidings_frames_in_total", (("type", "send"),))] == 2
    assert samples[("tidings_frames_in_total", (("type", "other"),))] == 1
    assert samples[("tidings_frames_out_total", (("type", "msg"),))] == 999
    assert samples[("tidings_errors_total", (("code", "bad_frame"),))] == 1
    assert samples[("tidings_connections_open", ())] == 1
    assert samples[("tidings_messages_persisted_total", ())] == 3
    assert metrics.registry.get_sample_value("tidings_bus_gaps_total") == 0


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    metrics = Metrics()
    first = ACK_BUCKETS[0]
    for value in (first, first / 2, ACK_BUCKETS[-1] * 2, 0.03):
        metrics.ack_latency.observe(value)
    samples = _samples(metrics)

    def bucket(le: str) -> float:
        return samples[("tidings_ack_latency_seconds_bucket", (("le", le),))]

    assert bucket(repr(first)) == 2  # a value equal to a bound counts in it
    assert bucket("0.05") == 3
    assert bucket(repr(ACK_BUCKETS[-1])) == 3
    assert bucket("+Inf") == 4
    assert samples[("tidings_ack_latency_seconds_count", ())] == 4
    expected_sum = first * 1.5 + ACK_BUCKETS[-1] * 2 + 0.03
    assert samples[("tidings_ack_latency_seconds_sum", ())] == pytest.approx(expected_sum)
