"""The search call end to end, on both engines: found within a second of
the ack, edits and deletes followed, filters, snippets, pages, and what a
member may not see (a later joiner, a non-member, a purged entry)."""

from __future__ import annotations

import time

import aiohttp

from tests.conftest import RunningServer
from tests.e2e.messaging_wire import sent
from tests.features.search.wire import FOUND_WITHIN_S, hits, search, until
from tests.wire import Http, Raw


async def test_a_member_finds_a_message_within_a_second_of_its_ack(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        alice, bob, eve = await http.account(), await http.account(), await http.account()
        cid = await http.conversation(alice, "direct", [bob])
        ws, _ = await Raw.connect(session, tidings_server.ws_url, alice.token)
        seq = await sent(ws, cid, {"text": "Shall we meet at the Café Zürich tomorrow?"})
        acked = time.monotonic()
        body = await until(http, bob, "cafe zurich", lambda b: bool(b["results"]))
        assert time.monotonic() - acked < FOUND_WITHIN_S
        [result] = body["results"]
        assert (result["conversation_id"], result["seq"], result["sender_id"]) == (
            cid,
            seq,
            alice.user_id,
        )
        assert result["snippet"] == (
            "Shall we meet at the <mark>Café</mark> <mark>Zürich</mark> tomorrow?"
        )
        assert body["next_cursor"] is None
        assert body["degraded"] is False
        assert hits(await search(http, eve, "cafe")) == []
        await ws.close()
