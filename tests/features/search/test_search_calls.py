"""The search call end to end, on both engines: found within a second of
the ack, edits and deletes followed, filters, snippets, pages, and what a
member may not see (a later joiner, a non-member, a purged entry)."""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.e2e.messaging_wire import sent
from tests.features.search.wire import FOUND_WITHIN_S, chat, hits, search, search_call, until
from tidings.core.ids import now_ms
from tidings.core.models import NewMessage

DAY_MS = 86_400_000


async def test_a_member_finds_a_message_within_a_second_of_its_ack(
    tidings_server: RunningServer,
) -> None:
    async with chat(tidings_server, "direct") as c:
        seq = await sent(c.ws, c.cid, {"text": "Shall we meet at the Café Zürich tomorrow?"})
        acked = time.monotonic()
        body = await until(c.http, c.bob, "cafe zurich", lambda b: bool(b["results"]))
        assert time.monotonic() - acked < FOUND_WITHIN_S
        [result] = body["results"]
        assert (result["conversation_id"], result["seq"], result["sender_id"]) == (
            c.cid,
            seq,
            c.alice.user_id,
        )
        assert result["snippet"] == (
            "Shall we meet at the <mark>Café</mark> <mark>Zürich</mark> tomorrow?"
        )
        assert body["next_cursor"] is None
        assert body["degraded"] is False
        assert hits(await search(c.http, c.eve, "cafe")) == []


async def test_edits_and_deletes_are_reflected(tidings_server: RunningServer) -> None:
    async with chat(tidings_server, "direct") as c:
        seq = await sent(c.ws, c.cid, {"text": "lunch at <b>noon</b> & then?"})
        body = await until(c.http, c.bob, "noon", lambda b: bool(b["results"]))
        assert body["results"][0]["snippet"] == (
            "lunch at &lt;b&gt;<mark>noon</mark>&lt;/b&gt; &amp; then?"
        )
        await sent(c.ws, c.cid, {"kind": "edit", "target": seq, "text": "lunch at one"})
        body = await until(c.http, c.bob, "lunch", lambda b: "one" in str(b["results"]))
        assert hits(body) == [(c.cid, seq)]
        assert body["results"][0]["snippet"] == "<mark>lunch</mark> at one"
        assert hits(await search(c.http, c.bob, "noon")) == []
        await sent(c.ws, c.cid, {"kind": "delete", "target": seq})
        await until(c.http, c.bob, "lunch", lambda b: not b["results"])


async def test_pages_follow_the_cursor_to_the_end(tidings_server: RunningServer) -> None:
    async with chat(tidings_server, "group") as c:
        seqs = [await sent(c.ws, c.cid, {"text": f"standup notes {i}"}) for i in range(5)]
        await until(c.http, c.bob, "standup", lambda b: len(b["results"]) == 5)
        seen: list[int] = []
        params: dict[str, object] = {"limit": 2}
        for _ in range(5):
            body = await search(c.http, c.bob, "standup", **params)
            seen += [seq for _, seq in hits(body)]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert sorted(seen) == seqs
        assert len(seen) == len(set(seen))


async def test_bad_queries_are_400_and_a_stranger_s_conversation_403(
    tidings_server: RunningServer,
) -> None:
    async with chat(tidings_server, "direct") as c:
        other = await search(c.http, c.alice, "hello")
        bad = {
            'q has an unclosed "': {"q": '"open phrase'},
            "q needs at least one word": {"q": f"in:{c.cid}"},
            "not a date": {"q": "hi before:yesterday"},
            "after: 'soon' is not a date": {"q": "hi", "after": "soon"},
            "limit": {"q": "hi", "limit": "0"},
            "cursor is not a cursor": {"q": "hi", "cursor": "!!"},
            "cursor belongs to another query": {
                "q": "bye",
                "cursor": "WyJpbmRleCIsMSwxLjAsImMiLDFd",
            },
            "the conversation is given twice": {"q": f"hi in:{c.cid}", "conversation_id": "c_x"},
            "more than 16": {"q": " ".join(f"w{i}" for i in range(17))},
            "length <= 500": {"q": "x" * 501},
        }
        for expected, params in bad.items():
            q = str(params.pop("q"))
            status, body = await search_call(c.http, c.alice, q, **params)
            assert status == 400, (expected, body)
            assert body["error"]["code"] == "bad_request"
            assert expected.split(":")[0].lower() in body["error"]["message"].lower(), body
        status, body = await search_call(c.http, c.eve, "hello", conversation_id=c.cid)
        assert status == 403
        assert body["error"]["code"] == "not_member"
        assert await search(c.http, c.alice, "hello") == other


async def test_older_than_the_window_is_found_only_by_the_store_path(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``index_days`` the index keeps recent messages; a search whose
    ``before`` is older than the window is answered by the store (``degraded``),
    paged by its own cursor."""
    monkeypatch.setenv("TIDINGS_SEARCH_INDEX_DAYS", "30")
    server = await server_factory()
    async with chat(server, "group") as c:
        old_ts = now_ms() - 90 * DAY_MS
        old = []
        for i in range(3):
            content = msgspec.json.encode({"text": f"archive entry {i}"})
            new = NewMessage(
                c.cid, c.alice.user_id, c.alice.device_id, f"old{i}", content, old_ts + i
            )
            old.append((await server.node.store.append(new)).message.seq)
        recent = await sent(c.ws, c.cid, {"text": "archive entry new"})
        body = await until(c.http, c.bob, "archive", lambda b: bool(b["results"]))
        assert hits(body) == [(c.cid, recent)]
        assert body["degraded"] is False
        before = str(now_ms() - 60 * DAY_MS)
        first = await search(c.http, c.bob, "archive", before=before, limit=2)
        assert first["degraded"] is True
        rest = await search(c.http, c.bob, "archive", before=before, cursor=first["next_cursor"])
        assert [s for _, s in hits(first) + hits(rest)] == list(reversed(old))
        assert rest["next_cursor"] is None
        assert first["results"][0]["snippet"] == "<mark>archive</mark> entry 2"
