"""A message sent on one node and delivered on another: its stages come from
both, in time order, each named after the node that recorded it."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.features.trace.support import Direct, connect, json_lines, stages_when, tidings_trace
from tests.wire import Http


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """Two nodes share a store only on PostgreSQL (with Redis between them)."""
    monkeypatch.setenv("TIDINGS_TRACE_ENABLED", "true")
    monkeypatch.setenv("TIDINGS_TRACE_CLUSTER_SAMPLE_RATE", "1")
    monkeypatch.setenv("TIDINGS_TRACE_FLUSH_MS", "50")
    return "postgres"


async def test_stages_across_two_nodes_in_time_order(server_factory: ServerFactory) -> None:
    first = await server_factory(moderators="tracemod2n")
    second = await server_factory(moderators="tracemod2n")
    async with aiohttp.ClientSession() as session:
        d = await Direct.make(Http(session, first.http_url), "tracemod2n")
        wa = await connect(session, first.ws_url, d.a, "wifi")
        wb = await connect(session, second.ws_url, d.b, "cellular")
        await wa.send(d.send("two-nodes", "across"))
        acked = await wa.recv_type("ack")
        msg = await wb.recv_type("msg")
        await wb.send(d.cursor("delivered", msg["seq"]))
        await wb.send(d.cursor("read", msg["seq"]))
        done = {"received", "persisted", "published", "acked", "delivered", "client_acked", "read"}
        # Asked of the node that delivered: every node reads the same table.
        stages = await stages_when(Http(session, second.http_url), d.admin.token, "two-nodes", done)
        times = [s["ts_us"] for s in stages]
        assert times == sorted(times), stages
        nodes = {s["stage"]: s["node"] for s in stages}
        sender_side = {nodes[s] for s in ("received", "persisted", "published", "acked")}
        receiver_side = {nodes[s] for s in ("delivered", "client_acked", "read")}
        assert len(sender_side) == 1
        assert len(receiver_side) == 1
        assert sender_side != receiver_side
        names = [s["stage"] for s in stages]
        assert names.index("published") < names.index("delivered") < names.index("client_acked")
        assert {s["message_id"] for s in stages} == {acked["message_id"]}
        code, out, err = await tidings_trace(first.node.settings.store_url, "two-nodes", "--json")
        assert code == 0, err
        assert json_lines(out) == stages
        await wa.close()
        await wb.close()
