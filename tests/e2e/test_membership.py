"""Group membership changes travel in the seq stream; listings and history over HTTP."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Http, Raw


async def test_add_and_remove_members_are_messages_in_the_stream(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        admin_acc = await http.account()
        member_acc = await http.account()
        new_acc = await http.account()
        cid = await http.conversation(admin_acc, "group", [member_acc])
        admin, _ = await Raw.connect(session, tidings_server.ws_url, admin_acc.token)
        member, _ = await Raw.connect(session, tidings_server.ws_url, member_acc.token)
        newcomer, _ = await Raw.connect(session, tidings_server.ws_url, new_acc.token)

        # The newcomer cannot post before being added.
        await newcomer.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "early",
                "content": {"text": "let me in"},
            }
        )
        assert (await newcomer.recv_type("error"))["code"] == "not_member"

        # A plain member may not add people; the admin may.
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/members",
            member_acc.token,
            {"user_ids": [new_acc.user_id]},
        )
        assert status == 403
        assert body["error"]["code"] == "forbidden"
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/members",
            admin_acc.token,
            {"user_ids": [new_acc.user_id]},
        )
        assert status == 200
        added = body["message"]
        assert added["seq"] == 1
        assert added["content"] == {
            "kind": "member_added",
            "user_ids": [new_acc.user_id],
            "by": admin_acc.user_id,
        }
        for conn in (admin, member, newcomer):
            frame = await conn.recv_type("msg")
            assert (frame["seq"], frame["content"]["kind"]) == (1, "member_added")

        # Adding someone already there changes nothing and appends nothing.
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/members",
            admin_acc.token,
            {"user_ids": [new_acc.user_id]},
        )
        assert (status, body) == (200, {"message": None})

        await newcomer.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "hi",
                "content": {"text": "thanks"},
            }
        )
        assert (await newcomer.recv_type("ack"))["seq"] == 2
        assert (await member.recv_type("msg"))["seq"] == 2
        assert (await admin.recv_type("msg"))["seq"] == 2

        # Removal: the removed member sees it too, then can no longer post.
        status, body = await http.call(
            "DELETE", f"/v1/conversations/{cid}/members/{new_acc.user_id}", admin_acc.token
        )
        assert status == 200
        assert body["message"]["content"]["kind"] == "member_removed"
        for conn in (admin, member, newcomer):
            frame = await conn.recv_type("msg")
            assert (frame["seq"], frame["content"]["kind"]) == (3, "member_removed")
        await newcomer.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "late",
                "content": {"text": "hello?"},
            }
        )
        assert (await newcomer.recv_type("error"))["code"] == "not_member"
        status, _ = await http.call("GET", f"/v1/conversations/{cid}/messages", new_acc.token)
        assert status == 403

        # A member may leave on their own.
        status, body = await http.call(
            "DELETE", f"/v1/conversations/{cid}/members/{member_acc.user_id}", member_acc.token
        )
        assert status == 200
        assert body["message"]["seq"] == 4
        for conn in (admin, member, newcomer):
            await conn.close()


async def test_listing_cursors_unread_and_history_pages(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        same = await http.conversation(b_acc, "direct", [a_acc])
        assert same == cid  # one direct conversation per pair
        for n in range(1, 11):
            status, _ = await http.call(
                "POST",
                f"/v1/conversations/{cid}/messages",
                a_acc.token,
                {"client_msg_id": f"m{n}", "content": {"text": str(n)}},
            )
            assert status == 201
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        await b.send({"type": "delivered", "conversation_id": cid, "seq": 7})
        await b.send({"type": "read", "conversation_id": cid, "seq": 4})
        await b.send({"type": "read", "conversation_id": cid, "seq": 2})  # never backwards
        await b.send({"type": "ping", "id": "flush"})
        await b.recv_type("pong")

        status, body = await http.call("GET", "/v1/conversations", b_acc.token)
        assert status == 200
        (state,) = body["conversations"]
        assert (state["last_seq"], state["delivered_seq"], state["read_seq"], state["unread"]) == (
            10,
            7,
            4,
            6,
        )

        async def seqs(query: str) -> list[int]:
            status, body = await http.call(
                "GET", f"/v1/conversations/{cid}/messages?{query}", b_acc.token
            )
            assert status == 200
            return [m["seq"] for m in body["messages"]]

        assert await seqs("after_seq=0&limit=4") == [1, 2, 3, 4]
        assert await seqs("after_seq=4&limit=4") == [5, 6, 7, 8]
        assert await seqs("after_seq=8") == [9, 10]
        assert await seqs("before_seq=11&limit=3") == [8, 9, 10]  # the newest page
        assert await seqs("after_seq=2&before_seq=6") == [3, 4, 5]
        status, body = await http.call("GET", f"/v1/conversations/{cid}/receipts", a_acc.token)
        cursors = {m["user_id"]: (m["delivered_seq"], m["read_seq"]) for m in body["members"]}
        assert cursors[b_acc.user_id] == (7, 4)
        status, body = await http.call(
            "GET", f"/v1/conversations/{cid}/receipts?read_seq=4", a_acc.token
        )
        # A wrote 1..10 into a conversation read to the end, so A has read them all.
        assert {m["user_id"] for m in body["members"]} == {a_acc.user_id, b_acc.user_id}
        status, body = await http.call(
            "GET", f"/v1/conversations/{cid}/receipts?read_seq=5", a_acc.token
        )
        assert [m["user_id"] for m in body["members"]] == [a_acc.user_id]
        await b.close()
