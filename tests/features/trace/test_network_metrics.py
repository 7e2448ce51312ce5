"""Metrics by client network move with what clients on each network do, and
the delivery rate is worked out from stored traces, on both deployments."""

from __future__ import annotations

import json
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, ServerFactory
from tests.features.trace.support import Direct, connect
from tests.wire import Http, poll
from tidings.core.trace import micros
from tidings.features.trace import trace_store
from tidings.features.trace.port import TraceRow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(server: RunningServer) -> Samples:
    text = server.node.metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_split_by_network(server_factory: ServerFactory) -> None:
    server = await server_factory()
    async with aiohttp.ClientSession() as session:
        d = await Direct.make(Http(session, server.http_url), "tracemodnet")
        wa = await connect(session, server.ws_url, d.a, "wifi")
        wb = await connect(session, server.ws_url, d.b, "cellular")
        await wa.send(d.send("net-1", "one"))
        await wa.recv_type("ack")
        await wa.send(d.send("net-1", "one"))  # a retry: its ack was "lost"
        await wa.recv_type("ack")
        await wa.send({**d.send("net-2", "x"), "conversation_id": "c_nowhere"})
        refused = await wa.recv()
        assert refused["type"] == "error", refused
        msg = await wb.recv_type("msg")
        await wb.send(d.cursor("delivered", msg["seq"]))
        await wb.send({"type": "sync", "cursors": {d.cid: 0}, "id": "s1"})
        await wb.recv_type("sync_done")
        await wb.close()
        await poll(lambda: _get(_samples(server), "tidings_connections_open") == 1, 10.0)
        samples = _samples(server)
        sends = "tidings_sends_total"
        assert _get(samples, sends, network="wifi", outcome="stored") == 1
        assert _get(samples, sends, network="wifi", outcome="duplicate") == 1
        assert _get(samples, sends, network="wifi", outcome="refused") == 1
        assert _get(samples, sends, network="cellular", outcome="stored") == 0
        acks = "tidings_client_ack_seconds_count"
        assert _get(samples, acks, network="cellular") == 1
        assert _get(samples, acks, network="wifi") == 0
        assert _get(samples, "tidings_sync_messages_count", network="cellular") == 1
        assert _get(samples, "tidings_sync_messages_sum", network="cellular") == 1
        drops = "tidings_connection_drops_total"
        assert _get(samples, drops, network="cellular", reason="client_closed") == 1
        assert _get(samples, drops, network="wifi", reason="client_closed") == 0
        await wa.close()


async def test_delivery_rate_counts_devices_that_acknowledged_in_time(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory()
    store = trace_store(server.node.store.engine_access())
    t0 = time.time() - 3600
    minute = 60_000_000

    def row(seq: int, stage: str, after_us: int, **more: object) -> TraceRow:
        fields: dict[str, object] = dict.fromkeys(TraceRow._fields)
        fields.update(conversation_id="c_rate", seq=seq, stage=stage, node="n1")
        fields.update(ts_us=micros(t0) + after_us, **more)
        return TraceRow(**fields)  # type: ignore[arg-type]

    def send(seq: int) -> TraceRow:
        return row(seq, "send", 0, acked_us=micros(t0) + 1000)

    def written(seq: int, *devices: tuple[str, str, str]) -> TraceRow:
        return row(seq, "delivered", 2000, devices=json.dumps(devices))

    def acked(seq: int, device: str, after_us: int) -> TraceRow:
        return row(seq, "client_acked", after_us, device_id=device)

    wifi, cell = ("u_w", "d_w", "wifi"), ("u_c", "d_c", "cellular")
    await store.write(
        [
            send(1),
            written(1, wifi, cell),
            send(2),
            written(2, wifi, cell),
            acked(2, "d_w", 5000),  # covers 1 and 2 for the WiFi device, in time
            acked(2, "d_c", 10 * minute),  # the cellular one: too late
        ],
    )
    counts = {c.network: c for c in await store.delivery(micros(t0), micros(t0) + minute, minute)}
    assert counts["wifi"] == ("wifi", 2, 2)
    assert counts["cellular"] == ("cellular", 2, 0)
    late = await store.delivery(micros(t0), micros(t0) + minute, 20 * minute)
    assert {c.network: c.acknowledged for c in late} == {"wifi": 2, "cellular": 2}
    assert await store.purge(micros(t0) + 3000) == 4  # the sends and the fan-outs
    assert await store.delivery(micros(t0), micros(t0) + minute, minute) == []
