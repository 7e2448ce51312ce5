"""A member's own view end to end (issue: messaging): unread and mention
counts across devices, mute / archive / pin, hidden messages on every
device, and what a member added later may read."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import RunningServer
from tests.e2e.messaging_wire import (
    entry,
    flush,
    history,
    listing,
    refused,
    sent,
    sync,
    view,
)
from tests.wire import WAIT_S, Http, Raw
from tidings.core.ids import now_ms


async def next_of(conn: Raw, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` on ``conn`` (bounded)."""
    return await conn.recv_type(kind, timeout=WAIT_S)


async def test_unread_and_mentions_follow_reading_on_another_device_and_mute_keeps_counting(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, c_acc, d_acc = await http.account(), await http.account(), await http.account()
        b1_acc = await http.account(device="phone")
        b2_acc = await http.login(b1_acc.username, device="laptop")
        b = b1_acc.user_id
        cid = await http.conversation(a_acc, "group", [b1_acc, c_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        c, _ = await Raw.connect(session, tidings_server.ws_url, c_acc.token)
        b1, _ = await Raw.connect(session, tidings_server.ws_url, b1_acc.token)
        assert await sent(a, cid, {"text": "hello"}) == 1  # unread
        assert await sent(a, cid, {"text": "hi B", "mentions": [b]}) == 2  # unread, mention
        assert await sent(a, cid, {"text": "all of you", "mention_all": True}) == 3  # ditto
        assert await sent(a, cid, {"text": "hi C", "mentions": [c_acc.user_id]}) == 4  # unread
        await sent(a, cid, {"kind": "edit", "target": 1, "text": "hello!"})  # 5: side entry
        await sent(a, cid, {"kind": "reaction", "target": 2, "emoji": "👋", "on": True})  # 6
        doomed = await sent(a, cid, {"text": "oops B", "mentions": [b]})  # 7: deleted below
        await sent(a, cid, {"kind": "delete", "target": doomed})  # 8
        status, body = await http.call(
            "POST", f"/v1/conversations/{cid}/members", a_acc.token, {"user_ids": [d_acc.user_id]}
        )
        assert (status, body["message"]["seq"]) == (200, 9)  # a membership event
        assert await sent(c, cid, {"text": "ping B", "mentions": [b]}) == 10  # unread, mention
        assert await sent(b1, cid, {"text": "my own"}) == 11  # B's own

        before = await listing(http, b2_acc, cid)
        assert (before["last_seq"], before["read_seq"]) == (11, 0)
        assert (before["unread"], before["mentions"]) == (5, 3)  # 1 2 3 4 10; 2 3 10
        assert (before["muted"], before["archived"], before["pinned"]) == (False, False, False)
        assert before["muted_until"] is None
        assert before["history_start"] == 1

        # B reads up to 3 on the phone: the laptop's counts follow.
        await b1.send({"type": "read", "conversation_id": cid, "seq": 3})
        await flush(b1)
        after = await listing(http, b2_acc, cid)
        assert (after["read_seq"], after["unread"], after["mentions"]) == (3, 2, 1)  # 4 10; 10
        b2, _ = await Raw.connect(session, tidings_server.ws_url, b2_acc.token)
        _, done = await sync(b2)
        state = entry(done, cid)
        assert (state["read_seq"], state["unread"], state["mentions"]) == (3, 2, 1)
        for default in ("muted", "archived", "pinned", "history_start"):
            assert default not in state, state  # left out at their defaults

        # B mutes on the phone, for ever: the laptop hears of it at once.
        status, body = await http.call(
            "PUT", f"/v1/conversations/{cid}/state", b1_acc.token, {"muted_until": -1}
        )
        assert status == 200, body
        expected = {
            "conversation_id": cid,
            "muted_until": -1,
            "muted": True,
            "archived": False,
            "pinned": False,
        }
        assert body == expected
        for conn in (b1, b2):
            frame = await next_of(conn, "conversation_state")
            assert frame == {"type": "conversation_state", **expected}

        # Muted still counts: a new message is unread, the conversation muted.
        assert await sent(a, cid, {"text": "while muted", "mentions": [b]}) == 12
        muted = await listing(http, b2_acc, cid)
        assert (muted["unread"], muted["mentions"]) == (3, 2)
        assert (muted["muted"], muted["muted_until"]) == (True, -1)
        fresh, _ = await Raw.connect(session, tidings_server.ws_url, b2_acc.token)
        _, done = await sync(fresh)
        state = entry(done, cid)
        assert (state["unread"], state["mentions"], state["muted"]) == (3, 2, True)
        await fresh.close()

        # Archive and pin; mute until a time: muted until then, not after.
        later = now_ms() + 3_600_000
        status, body = await http.call(
            "PUT",
            f"/v1/conversations/{cid}/state",
            b2_acc.token,
            {"muted_until": later, "archived": True, "pinned": True},
        )
        assert status == 200, body
        assert (body["muted_until"], body["muted"], body["archived"], body["pinned"]) == (
            later,
            True,
            True,
            True,
        )
        frame = await next_of(b1, "conversation_state")
        assert (frame["muted_until"], frame["archived"], frame["pinned"]) == (later, True, True)
        status, body = await http.call(
            "PUT", f"/v1/conversations/{cid}/state", b1_acc.token, {"muted_until": now_ms() - 1}
        )
        assert (status, body["muted"], body["archived"]) == (200, False, True)
        status, body = await http.call(
            "PUT", f"/v1/conversations/{cid}/state", b1_acc.token, {"muted_until": None}
        )
        assert (status, body["muted_until"], body["muted"]) == (200, None, False)
        unmuted = await listing(http, b1_acc, cid)
        assert (unmuted["muted"], unmuted["archived"], unmuted["pinned"]) == (False, True, True)
        # Others' settings are their own.
        other = await listing(http, c_acc, cid)
        assert (other["muted"], other["archived"], other["pinned"]) == (False, False, False)
        for conn in (a, b1, b2, c):
            await conn.close()


async def test_a_member_added_later_reads_from_the_join_unless_history_is_full(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc, c_acc, d_acc = [await http.account() for _ in range(4)]
        cid = await http.conversation(a_acc, "group", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        c, _ = await Raw.connect(session, tidings_server.ws_url, c_acc.token)
        await sent(a, cid, {"text": "before C: one"})
        await sent(a, cid, {"text": "before C: two"})

        async def members(method: str, path: str) -> int:
            status, body = await http.call(
                method, f"/v1/conversations/{cid}/members{path}", a_acc.token,
                {"user_ids": [c_acc.user_id]} if method == "POST" else None,
            )  # fmt: skip
            assert status == 200, body
            seq: int = body["message"]["seq"]
            return seq

        assert await members("POST", "") == 3
        assert await sent(a, cid, {"text": "welcome C"}) == 4
        assert await members("DELETE", f"/{b_acc.user_id}") == 5
        assert await sent(a, cid, {"text": "bye B"}) == 6

        # Live: C gets its own member_added, then everything after, in seq order.
        live = [await next_of(c, "msg") for _ in range(4)]
        assert [(m["seq"], m["content"].get("kind", "text")) for m in live] == [
            (3, "member_added"),
            (4, "text"),
            (5, "member_removed"),
            (6, "text"),
        ]
        assert live[0]["content"]["user_ids"] == [c_acc.user_id]
        assert live[2]["content"]["user_ids"] == [b_acc.user_id]

        # History, view and sync all start at C's join.
        assert [m["seq"] for m in await history(http, c_acc, cid)] == [3, 4, 5, 6]
        assert [m["seq"] for m in await history(http, c_acc, cid, "&before_seq=3")] == []
        assert [e["seq"] for e in await view(http, c_acc, cid)] == [3, 4, 5, 6]
        fresh, _ = await Raw.connect(session, tidings_server.ws_url, c_acc.token)
        msgs, done = await sync(fresh, cursors={cid: 0})
        assert [m["seq"] for m in msgs] == [3, 4, 5, 6]
        state = entry(done, cid)
        assert (state["history_start"], state["unread"]) == (3, 2)  # 4 and 6
        item = await listing(http, c_acc, cid)
        assert (item["history_start"], item["unread"]) == (3, 2)
        await fresh.close()
        # The members who were there read everything.
        assert [m["seq"] for m in await history(http, a_acc, cid)] == [1, 2, 3, 4, 5, 6]

        # A group whose history is "full": a later joiner reads everything.
        status, body = await http.call(
            "PATCH", f"/v1/conversations/{cid}", a_acc.token, {"history": "full"}
        )
        assert (status, body["history"], body["retention_days"]) == (200, "full", None)
        status, body = await http.call(
            "POST", f"/v1/conversations/{cid}/members", a_acc.token, {"user_ids": [d_acc.user_id]}
        )
        assert (status, body["message"]["seq"]) == (200, 7)
        assert [m["seq"] for m in await history(http, d_acc, cid)] == list(range(1, 8))
        d, _ = await Raw.connect(session, tidings_server.ws_url, d_acc.token)
        msgs, done = await sync(d)
        assert [m["seq"] for m in msgs] == list(range(1, 8))
        assert "history_start" not in entry(done, cid)  # from 1: the default, left out
        assert (await listing(http, d_acc, cid))["history_start"] == 1
        for conn in (a, c, d):
            await conn.close()


async def test_hiding_a_message_reaches_every_device_of_the_user(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc = await http.account()
        b1_acc = await http.account(device="phone")
        b2_acc = await http.login(b1_acc.username, device="laptop")
        outsider = await http.account()
        cid = await http.conversation(a_acc, "direct", [b1_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        for n in range(1, 4):
            assert await sent(a, cid, {"text": f"message {n}"}) == n
        b1, _ = await Raw.connect(session, tidings_server.ws_url, b1_acc.token)
        b2, _ = await Raw.connect(session, tidings_server.ws_url, b2_acc.token)

        status, body = await http.call(
            "POST", f"/v1/conversations/{cid}/hidden", b1_acc.token, {"seqs": [2], "hidden": True}
        )
        assert (status, body) == (200, {"conversation_id": cid, "seqs": [2]})
        for conn in (b1, b2):
            frame = await next_of(conn, "hidden")
            assert frame == {"type": "hidden", "conversation_id": cid, "seqs": [2], "hidden": True}
        status, body = await http.call("GET", f"/v1/conversations/{cid}/hidden", b2_acc.token)
        assert (status, body) == (200, {"conversation_id": cid, "seqs": [2]})
        assert [e["seq"] for e in await view(http, b2_acc, cid)] == [1, 3]
        # Hidden for B only: A still sees it, and has nothing hidden.
        assert [e["seq"] for e in await view(http, a_acc, cid)] == [1, 2, 3]
        status, body = await http.call("GET", f"/v1/conversations/{cid}/hidden", a_acc.token)
        assert (status, body["seqs"]) == (200, [])
        # The stream itself is unchanged ("delete for me" is a view).
        assert [m["seq"] for m in await history(http, b1_acc, cid)] == [1, 2, 3]
        # A newest-first page of the view fills up past the hidden entry.
        status, body = await http.call(
            "GET", f"/v1/conversations/{cid}/messages?view=current&before_seq=4&limit=2",
            b1_acc.token,
        )  # fmt: skip
        assert (status, [e["seq"] for e in body["messages"]]) == (200, [1, 3])

        # Unhide on the laptop: both devices hear of it, the view is whole again.
        status, body = await http.call(
            "POST", f"/v1/conversations/{cid}/hidden", b2_acc.token, {"seqs": [2], "hidden": False}
        )
        assert (status, body["seqs"]) == (200, [])
        for conn in (b1, b2):
            frame = await next_of(conn, "hidden")
            assert (frame["seqs"], frame["hidden"]) == ([2], False)
        assert [e["seq"] for e in await view(http, b1_acc, cid)] == [1, 2, 3]

        # A seq the conversation does not hold, or a caller who is no member.
        status, body = await http.call(
            "POST", f"/v1/conversations/{cid}/hidden", b1_acc.token, {"seqs": [4]}
        )
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, _ = await http.call(
            "POST", f"/v1/conversations/{cid}/hidden", outsider.token, {"seqs": [1]}
        )
        assert status == 403
        status, body = await http.call("GET", f"/v1/conversations/{cid}/hidden", b1_acc.token)
        assert body["seqs"] == []
        # A heard none of B's hiding.
        async with asyncio.timeout(WAIT_S):
            await a.send({"type": "ping", "id": "last"})
            while (frame := await a.recv())["type"] != "pong":
                assert frame["type"] != "hidden", frame
        assert await refused(a, cid, {"kind": "hidden"}) == "bad_frame"
        for conn in (a, b1, b2):
            await conn.close()
