"""Health, readiness, metrics and the per-message structured log line."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.wire import Http, Raw
from tidings.observability.logging import JsonFormatter


async def test_health_ready_and_metrics(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        assert await http.call("GET", "/healthz") == (200, {"status": "ok", "checks": {}})
        status, body = await http.call("GET", "/readyz")
        assert status == 200
        assert body["checks"] == {"store": "ok", "bus": "ok", "presence": "ok", "push": "ok"}

        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        await a.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "m1",
                "content": {"text": "hi"},
            }
        )
        await a.recv_type("ack")
        await b.recv_type("msg")
        await a.send({"type": "nonsense"})
        await a.recv_type("error")

        async with session.get(tidings_server.http_url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert samples["tidings_connections_open"] == 2
        assert samples["tidings_messages_persisted_total"] == 1
        assert samples['tidings_frames_in_total{type="send"}'] == 1
        assert samples['tidings_frames_out_total{type="msg"}'] == 1
        assert samples['tidings_frames_out_total{type="ack"}'] == 1
        assert samples['tidings_errors_total{code="unknown_type"}'] == 1
        assert samples["tidings_ack_latency_seconds_count"] == 1
        await a.close()
        await b.close()


async def test_every_stored_message_is_logged_with_its_ids(
    tidings_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.messages")
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        for cmid in ("first", "second", "first"):
            await a.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": cmid,
                    "content": {"text": "x"},
                }
            )
            await a.recv_type("ack")
        await a.close()
    records = [r for r in caplog.records if r.name == "tidings.messages"]
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    assert [(x["seq"], x["client_msg_id"], x["duplicate"]) for x in lines] == [
        (1, "first", False),
        (2, "second", False),
        (1, "first", True),
    ]
    assert all(x["conversation_id"] == cid and x["message_id"].startswith("m_") for x in lines)
    assert all(x["level"] == "info" for x in lines)
