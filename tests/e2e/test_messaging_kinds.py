"""Edits and reactions end to end (issue: messaging): side entries travel in
the seq stream, members who were offline get them through sync in order,
``?view=current`` folds them, and a send that breaks a rule stores nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import RunningServer, ServerFactory
from tests.e2e.messaging_wire import clock_past, history, last_seq, refused, send, sent, sync, view
from tests.wire import WAIT_S, Http, Raw


async def test_edits_and_deletes_reach_an_offline_member_through_sync_in_order(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        # B is offline while A writes, edits twice and deletes.
        first = await sent(a, cid, {"text": "draft one"})
        second = await sent(a, cid, {"text": "to be deleted"})
        edit1 = await sent(a, cid, {"kind": "edit", "target": first, "text": "draft two"})
        edit2 = await sent(a, cid, {"kind": "edit", "target": first, "text": "final words"})
        gone = await sent(a, cid, {"kind": "delete", "target": second})
        assert [first, second, edit1, edit2, gone] == [1, 2, 3, 4, 5]

        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, done = await sync(b)
        assert [m["seq"] for m in msgs] == [1, 2, 3, 4, 5]
        assert [m["content"] for m in msgs] == [
            {"text": "draft one"},
            {"kind": "deleted"},
            {"kind": "edit", "target": 1, "text": "draft two"},
            {"kind": "edit", "target": 1, "text": "final words"},
            {"kind": "delete", "target": 2},
        ]
        assert all(m["sender_id"] == a_acc.user_id for m in msgs)
        (state,) = done["conversations"]
        assert state["last_seq"] == 5
        # Side entries, a deleted message and B's own nothing: one unread.
        assert state["unread"] == 1

        current = await view(http, b_acc, cid)
        assert [e["seq"] for e in current] == [1, 2]
        shown, deleted = current
        assert shown["content"] == {"text": "final words"}
        assert shown["edited"] is True
        assert shown["edited_ts"] == msgs[3]["ts"]
        assert shown["deleted"] is False
        assert shown["reactions"] == []
        assert deleted["content"] == {"kind": "deleted"}
        assert deleted["deleted"] is True
        assert deleted["edited"] is False

        # B is not the author: its edit is forbidden and nothing is stored.
        assert await refused(b, cid, {"kind": "edit", "target": 1, "text": "hijack"}) == "forbidden"
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            b_acc.token,
            {"client_msg_id": "hijack-http", "content": {"kind": "edit", "target": 1, "text": "x"}},
        )
        assert (status, body["error"]["code"]) == (403, "forbidden")
        # A deleted target cannot be edited; a missing seq is no target.
        assert await refused(a, cid, {"kind": "edit", "target": 2, "text": "undead"}) == "forbidden"
        assert await refused(a, cid, {"kind": "edit", "target": 99, "text": "void"}) == "not_found"
        assert await refused(a, cid, {"kind": "delete", "target": 2}) == "forbidden"
        assert await refused(b, cid, {"kind": "delete", "target": 1}) == "forbidden"
        assert await last_seq(http, a_acc, cid) == 5
        assert (await view(http, b_acc, cid))[0]["content"] == {"text": "final words"}

        # A device that syncs from its cursor after all this gets nothing new.
        msgs, _ = await sync(b, cursors={cid: 5})
        assert msgs == []
        await a.close()
        await b.close()


async def test_a_side_entry_is_no_target(tidings_server: RunningServer) -> None:
    """An edit, delete or reaction naming a side entry (here an edit) gets
    not_found, as a seq that does not exist does, whoever sends it; nothing
    is stored."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        await sent(a, cid, {"text": "original"})
        side = await sent(a, cid, {"kind": "edit", "target": 1, "text": "edited"})
        attempts: list[dict[str, Any]] = [
            {"kind": "reaction", "target": side, "emoji": "👍", "on": True},
            {"kind": "delete", "target": side},
            {"kind": "edit", "target": side, "text": "an edit of an edit"},
        ]
        codes = [await refused(a, cid, content) for content in attempts]
        assert codes == ["not_found"] * len(attempts)
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            a_acc.token,
            {"client_msg_id": "edit-of-edit", "content": attempts[-1]},
        )
        assert (status, body["error"]["code"]) == (404, "not_found")
        assert await last_seq(http, a_acc, cid) == side
        await a.close()


async def test_an_edit_after_the_edit_window_is_forbidden(server_factory: ServerFactory) -> None:
    """With ``edit_window_s`` 0 a message can be edited only within the
    millisecond it was sent: once the clock moved on, the edit is refused."""
    server = await server_factory(edit_window_s=0)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, server.ws_url, a_acc.token)
        answer = await send(a, cid, {"text": "set in stone"})
        assert answer["type"] == "ack", answer
        # Wait (a few ms at most) until the server's clock is past the message's ts.
        await clock_past(answer["ts"])
        edit = {"kind": "edit", "target": answer["seq"], "text": "too late"}
        assert await refused(a, cid, edit) == "forbidden"
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            a_acc.token,
            {"client_msg_id": "late-http", "content": edit},
        )
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert await last_seq(http, a_acc, cid) == 1
        (only,) = await view(http, b_acc, cid)
        assert (only["content"], only["edited"]) == ({"text": "set in stone"}, False)
        # Reactions and deletes have no window.
        await sent(a, cid, {"kind": "reaction", "target": 1, "emoji": "👍", "on": True})
        await sent(a, cid, {"kind": "delete", "target": 1})
        assert await last_seq(http, a_acc, cid) == 3
        await a.close()


def fold_reactions(frames: list[dict[str, Any]], target: int) -> dict[tuple[str, str], bool]:
    """What a client folds from the reaction entries it received, in seq order."""
    state: dict[tuple[str, str], bool] = {}
    for frame in sorted(frames, key=lambda f: f["seq"]):
        content = frame["content"]
        if content.get("kind") == "reaction" and content["target"] == target:
            state[(frame["sender_id"], content["emoji"])] = content["on"]
    return state


async def test_reaction_toggles_from_two_devices_of_one_user_converge(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc = await http.account()
        b1_acc = await http.account(device="phone")
        b2_acc = await http.login(b1_acc.username, device="laptop")
        c_acc = await http.account()
        cid = await http.conversation(a_acc, "group", [b1_acc, c_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        b1, _ = await Raw.connect(session, tidings_server.ws_url, b1_acc.token)
        b2, _ = await Raw.connect(session, tidings_server.ws_url, b2_acc.token)
        target = await sent(a, cid, {"text": "react to me"})

        def reaction(emoji: str, on: bool) -> dict[str, Any]:
            return {"kind": "reaction", "target": target, "emoji": emoji, "on": on}

        # B's two devices toggle the same emoji back and forth, A and C react too.
        await sent(b1, cid, reaction("👍", True))
        await sent(b2, cid, reaction("👍", True))  # twice on is still one
        await sent(a, cid, reaction("👍", True))
        await sent(b2, cid, reaction("❤️", True))
        await sent(b1, cid, reaction("👍", False))
        await sent(b1, cid, reaction("❤️", False))
        await sent(b2, cid, reaction("❤️", True))
        c, _ = await Raw.connect(session, tidings_server.ws_url, c_acc.token)
        await sent(c, cid, reaction("❤️", True))
        await sent(c, cid, reaction("🎉", True))
        await sent(c, cid, reaction("🎉", False))
        last = await sent(b2, cid, reaction("😂", True))
        assert last == 12

        # Both of B's devices read the same toggles in the same seq order and
        # fold them to the same state.
        # (Fresh connections, so that no live frame is mixed into the sync.)
        seen: list[list[dict[str, Any]]] = []
        for acc in (b1_acc, b2_acc):
            conn, _ = await Raw.connect(session, tidings_server.ws_url, acc.token)
            frames, _ = await sync(conn, cursors={cid: 0})
            await conn.close()
            assert [f["seq"] for f in frames] == list(range(1, last + 1))
            seen.append(frames)
        assert seen[0] == seen[1]
        assert fold_reactions(seen[0], target) == {
            (b1_acc.user_id, "👍"): False,
            (b1_acc.user_id, "❤️"): True,
            (b1_acc.user_id, "😂"): True,
            (a_acc.user_id, "👍"): True,
            (c_acc.user_id, "❤️"): True,
            (c_acc.user_id, "🎉"): False,
        }

        expected_for_b = [
            {"emoji": "❤️", "count": 2, "me": True},
            {"emoji": "👍", "count": 1, "me": False},
            {"emoji": "😂", "count": 1, "me": True},
        ]
        for who in (b1_acc, b2_acc):
            (shown,) = await view(http, who, cid)
            assert shown["seq"] == target
            assert shown["reactions"] == expected_for_b
            assert shown["content"] == {"text": "react to me"}
            assert shown["edited"] is False
        (for_a,) = await view(http, a_acc, cid)
        assert for_a["reactions"] == [
            {"emoji": "❤️", "count": 2, "me": False},
            {"emoji": "👍", "count": 1, "me": True},
            {"emoji": "😂", "count": 1, "me": False},
        ]
        # Reactions are side entries: no unread for C, who reacted after reading nothing.
        status, body = await http.call("GET", "/v1/conversations", c_acc.token)
        assert status == 200
        assert body["conversations"][0]["unread"] == 1
        # A reaction to a reaction is no reaction.
        assert await refused(a, cid, {**reaction("👍", True), "target": 2}) == "not_found"
        for conn in (a, b1, b2, c):
            await conn.close()


async def test_bad_input_is_refused_and_stores_nothing(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc, c_acc = await http.account(), await http.account(), await http.account()
        direct = await http.conversation(a_acc, "direct", [b_acc])
        group = await http.conversation(a_acc, "group", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        assert await sent(a, direct, {"text": "the one message"}) == 1
        assert await sent(a, group, {"text": "the one message"}) == 1

        membership = {"user_ids": [c_acc.user_id], "by": a_acc.user_id}
        cases: list[tuple[str, dict[str, Any], str]] = [
            (group, {"kind": "member_added", **membership}, "bad_frame"),
            (group, {"kind": "member_removed", **membership}, "bad_frame"),
            (direct, {"kind": "deleted"}, "bad_frame"),
            (direct, {"kind": "edit", "text": "no target"}, "bad_frame"),
            (direct, {"kind": "edit", "target": 0, "text": "seq 0"}, "bad_frame"),
            (direct, {"kind": "delete"}, "bad_frame"),
            (direct, {"kind": "reaction", "target": 1, "emoji": "x" * 33, "on": True}, "bad_frame"),
            (direct, {"kind": "reaction", "target": 1, "emoji": "", "on": True}, "bad_frame"),
            (direct, {"kind": "reaction", "target": 1, "emoji": "👍"}, "bad_frame"),
            (direct, {"text": "re: nothing", "reply_to": 99}, "not_found"),
            (direct, {"text": "everyone!", "mention_all": True}, "bad_frame"),
            (group, {"text": "twice", "mentions": [b_acc.user_id, b_acc.user_id]}, "bad_frame"),
            (direct, {"kind": "reaction", "target": 99, "emoji": "👍", "on": True}, "not_found"),
            (direct, {"kind": "delete", "target": 99}, "not_found"),
        ]
        for cid, content, code in cases:
            assert await refused(a, cid, content) == code, content
        status_of = {"bad_frame": 400, "not_found": 404}
        for n, (cid, content, code) in enumerate(cases):
            status, body = await http.call(
                "POST",
                f"/v1/conversations/{cid}/messages",
                a_acc.token,
                {"client_msg_id": f"bad-{n}", "content": content},
            )
            assert (status, body["error"]["code"]) == (status_of[code], code), content
        assert await last_seq(http, a_acc, direct) == 1
        assert await last_seq(http, a_acc, group) == 1

        # A non-admin may not change a group's settings; nothing changes.
        for change in ({"title": "mine now"}, {"history": "full"}, {"retention_days": 1}):
            status, body = await http.call(
                "PATCH", f"/v1/conversations/{group}", b_acc.token, change
            )
            assert (status, body["error"]["code"]) == (403, "forbidden"), change
        status, body = await http.call("GET", f"/v1/conversations/{group}", a_acc.token)
        assert (body["title"], body["history"], body["retention_days"]) == ("t", "joined", None)
        # Nor may an outsider; and a direct conversation has no title or history.
        status, _ = await http.call(
            "PATCH", f"/v1/conversations/{group}", c_acc.token, {"title": "x"}
        )
        assert status == 403
        status, body = await http.call(
            "PATCH", f"/v1/conversations/{direct}", a_acc.token, {"title": "x"}
        )
        assert (status, body["error"]["code"]) == (400, "bad_request")
        status, _ = await http.call(
            "PATCH", f"/v1/conversations/{group}", a_acc.token, {"history": "everything"}
        )
        assert status == 400

        # The same rules let the right content through (they refuse no more).
        assert await sent(a, group, {"text": "re", "reply_to": 1}) == 2
        assert await sent(a, group, {"text": "all", "mention_all": True}) == 3
        assert await sent(a, group, {"text": "b", "mentions": [b_acc.user_id]}) == 4
        assert await sent(a, direct, {"text": "fwd", "forwarded": True, "reply_to": 1}) == 2
        status, body = await http.call(
            "PATCH", f"/v1/conversations/{group}", a_acc.token, {"title": "renamed"}
        )
        assert (status, body["title"]) == (200, "renamed")
        await a.close()


async def test_an_edit_sent_right_behind_a_delete_of_its_target_is_refused(
    tidings_server: RunningServer,
) -> None:
    """A delete and an edit of the same message sent without waiting (they may
    be judged before either is stored, and appended in one run): the edit is
    forbidden, whichever check sees the delete first; nothing of it is stored."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        rounds = 20
        for n in range(rounds):
            target = await sent(a, cid, {"text": f"target {n}"})
            for ref, content in (
                (f"del-{n}", {"kind": "delete", "target": target}),
                (f"edit-{n}", {"kind": "edit", "target": target, "text": f"ghost {n}"}),
            ):
                await a.send(
                    {
                        "type": "send",
                        "id": ref,
                        "conversation_id": cid,
                        "client_msg_id": ref,
                        "content": content,
                    }
                )
            answers: dict[str, dict[str, Any]] = {}
            async with asyncio.timeout(WAIT_S):
                while len(answers) < 2:
                    frame = await a.recv()
                    if frame["type"] in ("ack", "error"):
                        answers[frame.get("id") or frame.get("ref") or "?"] = frame
            assert answers[f"del-{n}"]["type"] == "ack", answers
            assert answers[f"edit-{n}"]["type"] == "error", answers
            assert answers[f"edit-{n}"]["code"] == "forbidden", answers
        assert await last_seq(http, a_acc, cid) == 2 * rounds
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, _ = await sync(b, cursors={cid: 0})
        assert "ghost" not in repr(msgs)
        assert all(e["deleted"] for e in await view(http, b_acc, cid))
        await a.close()
        await b.close()


async def test_a_burst_mixing_replies_and_plain_texts_keeps_the_order_sent(
    tidings_server: RunningServer,
) -> None:
    """docs/protocol.md: sends of one connection enter the store in arrival
    order, so their seqs (and acks) follow the order sent, even when the
    client does not wait for acks. A reply is judged by a rule (its
    ``reply_to`` must exist) before it is stored; a plain text is not: the
    text sent after a reply must still get the later seq."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        assert await sent(a, cid, {"text": "the thread"}) == 1
        count = 20
        for n in range(count):
            content: dict[str, Any] = {"text": f"burst {n}"}
            if n % 2 == 0:
                content["reply_to"] = 1
            await a.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"b-{n}",
                    "content": content,
                }
            )
        acks = [await a.recv_type("ack") for _ in range(count)]
        by_seq = sorted(acks, key=lambda ack: ack["seq"])
        assert [ack["client_msg_id"] for ack in by_seq] == [f"b-{n}" for n in range(count)]
        assert [ack["client_msg_id"] for ack in acks] == [f"b-{n}" for n in range(count)]
        stream = await history(http, b_acc, cid, "&after_seq=1")
        assert [m["content"]["text"] for m in stream] == [f"burst {n}" for n in range(count)]
        await a.close()
