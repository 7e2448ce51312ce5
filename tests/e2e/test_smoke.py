"""The first thing a user does: two people chat over real sockets."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Http, Raw


async def test_two_users_chat(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        alice = await http.account("alice")
        bob = await http.account("bob")
        cid = await http.conversation(alice, "direct", [bob])
        a, welcome = await Raw.connect(session, tidings_server.ws_url, alice.token)
        b, _ = await Raw.connect(session, tidings_server.ws_url, bob.token)
        assert welcome["user_id"] == alice.user_id
        assert welcome["epoch"]
        await a.send(
            {
                "type": "send",
                "id": "r1",
                "conversation_id": cid,
                "client_msg_id": "m1",
                "content": {"text": "hi bob"},
            }
        )
        ack = await a.recv_type("ack")
        assert ack["seq"] == 1
        assert ack["id"] == "r1"
        assert ack["duplicate"] is False
        msg = await b.recv_type("msg")
        assert msg["content"] == {"text": "hi bob"}
        assert msg["seq"] == 1
        assert msg["sender_id"] == alice.user_id
        await a.close()
        await b.close()
