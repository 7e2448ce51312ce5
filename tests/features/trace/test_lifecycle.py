"""A message's lifecycle, as ``tidings trace`` and the admin call show it,
against real servers on both deployments."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp

from tests.conftest import ServerFactory
from tests.features.trace.support import (
    Direct,
    admin_trace,
    connect,
    json_lines,
    stages_when,
    tidings_trace,
)
from tests.wire import Http

_names = itertools.count()


def _moderator() -> str:
    return f"tracemod{next(_names)}"


def _ordered(stages: list[dict[str, Any]]) -> None:
    times = [s["ts_us"] for s in stages]
    assert times == sorted(times), stages
    assert all(s["ts"] == s["ts_us"] // 1000 for s in stages)


async def test_every_stage_of_a_message_in_time_order(server_factory: ServerFactory) -> None:
    mod = _moderator()
    server = await server_factory(moderators=mod)
    async with aiohttp.ClientSession() as session:
        d = await Direct.make(Http(session, server.http_url), mod)
        wa = await connect(session, server.ws_url, d.a, "wifi")
        wb = await connect(session, server.ws_url, d.b, "cellular")
        await wa.send(d.send("trace-1"))
        acked = await wa.recv_type("ack")
        msg = await wb.recv_type("msg")
        assert msg["seq"] == acked["seq"]
        await wb.send(d.cursor("delivered", msg["seq"]))
        await wb.send(d.cursor("read", msg["seq"]))

        done = {"received", "persisted", "published", "acked", "delivered"}
        done |= {"client_acked", "read"}
        stages = await stages_when(d.http, d.admin.token, acked["message_id"], done)
        _ordered(stages)
        names = [s["stage"] for s in stages]
        assert sorted(names) == sorted(done), names  # each once: one recipient device
        assert names[0] == "received"
        assert names.index("persisted") < names.index("published")
        assert names.index("persisted") < names.index("delivered")
        assert names.index("delivered") < names.index("client_acked")
        by = {s["stage"]: s for s in stages}
        assert by["received"]["device_id"] == d.a.device_id
        assert by["received"]["network"] == "wifi"
        assert by["acked"]["user_id"] == d.a.user_id
        for stage in ("delivered", "client_acked"):
            assert by[stage]["device_id"] == d.b.device_id, by[stage]
            assert by[stage]["network"] == "cellular"
        assert by["delivered"]["via"] == "live"
        assert by["read"]["user_id"] == d.b.user_id
        assert {s["message_id"] for s in stages} == {acked["message_id"]}
        assert {s["seq"] for s in stages} == {acked["seq"]}

        # The same by client_msg_id, and from the command while the server runs.
        store = server.node.settings.store_url
        code, out, err = await tidings_trace(store, "trace-1", "--json")
        assert code == 0, err
        assert json_lines(out) == stages
        code, out, err = await tidings_trace(store, acked["message_id"])
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"message {acked['message_id']}")
        assert [line.split()[1] for line in lines[1:]] == names

        # Later cursor moves are not part of this message's life.
        await wa.send(d.send("trace-2", "again"))
        second = await wb.recv_type("msg")
        await wb.send(d.cursor("delivered", second["seq"]))
        await stages_when(d.http, d.admin.token, "trace-2", {"client_acked"})
        status, body = await admin_trace(d.http, d.admin.token, acked["message_id"])
        assert status == 200
        assert [s["stage"] for s in body["stages"]] == names
        await wa.close()
        await wb.close()


async def test_the_admin_call_is_for_moderators_only(server_factory: ServerFactory) -> None:
    mod = _moderator()
    server = await server_factory(moderators=mod)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        admin, someone = await http.account(mod), await http.account()
        status, body = await admin_trace(http, someone.token, "m_nothing")
        assert status == 403, body
        assert body["error"]["code"] == "forbidden"
        status, body = await admin_trace(http, admin.token, "m_nothing")
        assert status == 404, body
        status, _ = await http.call("GET", "/v1/admin/trace/m_nothing")
        assert status == 401
    code, _, err = await tidings_trace(server.node.settings.store_url, "m_nothing")
    assert code == 1
    assert "no traced message" in err


async def test_redelivery_is_traced_per_attempt(server_factory: ServerFactory) -> None:
    mod = _moderator()
    server = await server_factory(moderators=mod, redelivery_ms=200)
    async with aiohttp.ClientSession() as session:
        d = await Direct.make(Http(session, server.http_url), mod)
        wa = await connect(session, server.ws_url, d.a, "ethernet")
        wb = await connect(session, server.ws_url, d.b, "cellular")
        await wa.send(d.send("lost-1", "x"))
        acked = await wa.recv_type("ack")
        await wb.recv_type("msg")
        await wb.recv_type("msg")  # the redelivery: b did not say delivered
        await wb.send(d.cursor("delivered", acked["seq"]))
        stages = await stages_when(d.http, d.admin.token, "lost-1", {"redelivered", "client_acked"})
        _ordered(stages)
        names = [s["stage"] for s in stages]
        redelivered = [s for s in stages if s["stage"] == "redelivered"]
        assert redelivered[0]["attempt"] == 1
        assert redelivered[0]["device_id"] == d.b.device_id
        assert names.index("delivered") < names.index("redelivered") < names.index("client_acked")
        await wa.close()
        await wb.close()


async def test_a_send_over_http_is_traced_too(server_factory: ServerFactory) -> None:
    mod = _moderator()
    server = await server_factory(moderators=mod)
    async with aiohttp.ClientSession() as session:
        d = await Direct.make(Http(session, server.http_url), mod)
        body = {"client_msg_id": "over-http", "content": {"text": "hi"}}
        path = f"/v1/conversations/{d.cid}/messages"
        status, answer = await d.http.call("POST", path, d.a.token, body)
        assert status == 201, answer
        done = ["received", "persisted", "published", "acked"]
        stages = await stages_when(d.http, d.admin.token, answer["message_id"], set(done))
        assert [s["stage"] for s in stages] == done
        assert stages[0]["network"] == "unknown"
        assert stages[0]["device_id"] == d.a.device_id
