"""The SDK's search call against a real server: results, pages, filters and
the server's refusals as errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RunningServer
from tests.wire import WAIT_S
from tidings_client import SearchPage, TidingsClientError, TidingsHTTP


async def _until_found(
    http: TidingsHTTP, q: str, count: int, sender_id: str | None = None
) -> SearchPage:
    async with asyncio.timeout(WAIT_S):
        while True:
            page = await http.search(q, sender_id=sender_id)
            if len(page.results) >= count:
                return page
            await asyncio.sleep(0.02)


async def test_the_sdk_searches_pages_and_filters(tidings_server: RunningServer) -> None:
    async with (
        TidingsHTTP(tidings_server.http_url) as alice,
        TidingsHTTP(tidings_server.http_url) as bob,
    ):
        await alice.register("sdk_alice", "correct horse")
        await bob.register("sdk_bob", "correct horse")
        me = await alice.login("sdk_alice", "correct horse")
        other = await bob.login("sdk_bob", "correct horse")
        conv = await alice.create_group("trip", [other.user_id])
        for i in range(3):
            await alice.post_message(conv.conversation_id, f"k{i}", f"Kyoto trip day {i}")
        await bob.post_message(conv.conversation_id, "b1", "京都 is lovely")
        found = await _until_found(bob, "kyoto", 3)
        assert {r.sender_id for r in found.results} == {me.user_id}
        assert found.degraded is False
        assert found.next_cursor is None
        assert "<mark>Kyoto</mark>" in found.results[0].snippet
        first = await bob.search("kyoto", limit=2)
        assert first.next_cursor is not None
        rest = await bob.search("kyoto", limit=2, cursor=first.next_cursor)
        seqs = {r.seq for r in first.results + rest.results}
        assert seqs == {r.seq for r in found.results}
        cjk = await _until_found(alice, "京都", 1, sender_id=other.user_id)
        assert [r.snippet for r in cjk.results] == ["<mark>京都</mark> is lovely"]
        assert (await alice.search("kyoto", after="2999-01-01")).results == []
        with pytest.raises(TidingsClientError) as refused:
            await alice.search('"unclosed')
        assert (refused.value.code, refused.value.status) == ("bad_request", 400)
