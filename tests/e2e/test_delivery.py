"""Delivery guarantees end to end over real sockets (issue: the spine).

Each test drives a real server through the public HTTP and WebSocket API and
checks what clients receive, frame by frame.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from tests.conftest import RunningServer
from tests.wire import WAIT_S, Http, Raw


def text(n: int | str) -> dict[str, Any]:
    return {"text": f"message {n}"}


async def send_and_ack(conn: Raw, cid: str, cmid: str, body: dict[str, Any]) -> dict[str, Any]:
    await conn.send(
        {"type": "send", "id": cmid, "conversation_id": cid, "client_msg_id": cmid, "content": body}
    )
    return await conn.recv_type("ack")


async def sync_all(conn: Raw, **fields: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One sync request: the msg frames it produced and its sync_done."""
    await conn.send({"type": "sync", "id": "s", **fields})
    msgs: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await conn.recv()
            if frame["type"] == "msg":
                msgs.append(frame)
            elif frame["type"] == "sync_done":
                return msgs, frame
            else:
                raise AssertionError(f"unexpected frame during sync: {frame}")


async def test_a_burst_of_sends_is_acked_in_order_and_a_sync_behind_it_sees_it(
    tidings_server: RunningServer,
) -> None:
    """A client flushing its outbox sends without waiting for acks: the
    server may answer several at once (docs/protocol.md), yet the seqs follow
    the order sent, every ack comes in that order, and a ``sync`` sent right
    behind the burst is answered after it, listing all of it."""
    count = 120  # above frames_in_flight (32): the connection also waits unread
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        await a.send_burst(cid, "burst", count)
        await a.send({"type": "sync", "id": "s", "cursors": {cid: 0}})
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S):
            while (frame := await a.recv())["type"] != "sync_done":
                frames.append(frame)
        done = frame
        # Every ack (in send order) comes before the sync's answer.
        assert [f["type"] for f in frames] == ["ack"] * count + ["msg"] * count
        acks, msgs = frames[:count], frames[count:]
        assert [ack["client_msg_id"] for ack in acks] == [f"burst-{n}" for n in range(count)]
        assert [ack["seq"] for ack in acks] == list(range(1, count + 1))
        assert [m["seq"] for m in msgs] == list(range(1, count + 1))
        assert [m["content"] for m in msgs] == [{"text": f"burst {n}"} for n in range(count)]
        assert done["conversations"][0]["last_seq"] == count
        await a.close()


async def test_seed_scenario_b_resyncs_from_98(tidings_server: RunningServer) -> None:
    """A and B share seqs up to 100; B last received 98; A's new message is 101.
    B reconnects and receives exactly 99, 100, 101 in order."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        for n in range(1, 101):
            ack = await send_and_ack(a, cid, f"a{n}", text(n))
            assert ack["seq"] == n
        received = [(await b.recv_type("msg"))["seq"] for _ in range(98)]
        assert received == list(range(1, 99))
        await b.send({"type": "delivered", "conversation_id": cid, "seq": 98})
        await b.send({"type": "ping", "id": "p"})  # frames are handled in order
        await b.recv_type("pong")
        await b.close()  # 99 and 100 were in flight: B never took them

        ack = await send_and_ack(a, cid, "a101", text(101))
        assert ack["seq"] == 101

        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, done = await sync_all(b, cursors={cid: 98})
        assert [m["seq"] for m in msgs] == [99, 100, 101]
        assert [m["content"] for m in msgs] == [text(99), text(100), text(101)]
        assert done["more"] is False
        (state,) = done["conversations"]
        assert state["last_seq"] == 101

        # Without explicit cursors the server resumes from this device's
        # delivered cursor, which B left at 98.
        msgs, _ = await sync_all(b)
        assert [m["seq"] for m in msgs] == [99, 100, 101]
        await a.close()
        await b.close()


async def test_seed_scenario_a_syncs_b_own_messages(tidings_server: RunningServer) -> None:
    """99 and 100 were B's own and A never received them: A syncs from its own
    cursor after sending 101 and gets them; the server needs nothing special."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        for n in range(1, 99):
            await send_and_ack(a, cid, f"a{n}", text(n))
        await a.close()  # A goes offline holding 1..98

        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        assert (await send_and_ack(b, cid, "b99", text(99)))["seq"] == 99
        assert (await send_and_ack(b, cid, "b100", text(100)))["seq"] == 100

        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        assert (await send_and_ack(a, cid, "a101", text(101)))["seq"] == 101
        # The ack's seq (101 > 98 + 1) shows A a gap; its own cursor says 98.
        msgs, _ = await sync_all(a, cursors={cid: 98})
        assert [(m["seq"], m["sender_id"]) for m in msgs] == [
            (99, b_acc.user_id),
            (100, b_acc.user_id),
            (101, a_acc.user_id),
        ]
        # The device cursor never skipped 99 and 100 either.
        msgs, _ = await sync_all(a)
        assert [m["seq"] for m in msgs][:2] == [99, 100]
        await a.close()
        await b.close()


async def test_sync_since_lists_only_changed_conversations(tidings_server: RunningServer) -> None:
    """A user in 2,000 conversations of which 3 changed since the token gets
    exactly those 3 and their missing messages; without a token, all 2,000."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        user, other = await http.account(), await http.account()
        sem = asyncio.Semaphore(32)

        async def make(i: int) -> str:
            async with sem:
                return await http.conversation(user, "group", [other])

        cids = await asyncio.gather(*(make(i) for i in range(2000)))
        assert len(set(cids)) == 2000
        for cid in cids[:5]:
            status, _ = await http.call(
                "POST",
                f"/v1/conversations/{cid}/messages",
                other.token,
                {"client_msg_id": f"early-{cid}", "content": text("early")},
            )
            assert status == 201

        conn, _ = await Raw.connect(session, tidings_server.ws_url, user.token)
        msgs, done = await sync_all(conn, limit=10_000)
        listed = {c["conversation_id"]: c["last_seq"] for c in done["conversations"]}
        assert set(listed) == set(cids)
        assert all(listed[c] == (1 if c in cids[:5] else 0) for c in cids)
        assert len(msgs) == 5
        token = done["token"]

        changed = [cids[10], cids[700], cids[1999]]
        for n, cid in enumerate([*changed, changed[0]]):
            status, _ = await http.call(
                "POST",
                f"/v1/conversations/{cid}/messages",
                other.token,
                {"client_msg_id": f"late-{n}", "content": text(n)},
            )
            assert status == 201
        live = [await conn.recv_type("msg") for _ in range(4)]
        assert sorted((m["conversation_id"], m["seq"]) for m in live) == sorted(
            [(changed[0], 1), (changed[0], 2), (changed[1], 1), (changed[2], 1)]
        )
        msgs, done = await sync_all(conn, since=token)
        assert {c["conversation_id"] for c in done["conversations"]} == set(changed)
        assert sorted((m["conversation_id"], m["seq"]) for m in msgs) == sorted(
            [(changed[0], 1), (changed[0], 2), (changed[1], 1), (changed[2], 1)]
        )
        # Nothing changed since the new token: an empty answer.
        msgs, done = await sync_all(conn, since=done["token"])
        assert msgs == []
        assert done["conversations"] == []
        await conn.close()


async def test_retry_with_same_client_msg_id_stores_once(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        first = await send_and_ack(a, cid, "retry-me", text("once"))
        await a.close()  # the connection drops; the client never saw the ack

        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        again = await send_and_ack(a, cid, "retry-me", text("once"))
        assert again["duplicate"] is True
        assert (again["seq"], again["message_id"]) == (first["seq"], first["message_id"])

        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            a_acc.token,
            {"client_msg_id": "retry-me", "content": text("once")},
        )
        assert status == 200
        assert body["duplicate"] is True
        assert body["seq"] == first["seq"]

        # And the other way round: first over HTTP, the retry over WebSocket.
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            a_acc.token,
            {"client_msg_id": "http-first", "content": text("two")},
        )
        assert status == 201
        assert body["duplicate"] is False
        ws_retry = await send_and_ack(a, cid, "http-first", text("two"))
        assert ws_retry["duplicate"] is True
        assert ws_retry["seq"] == body["seq"]

        status, history = await http.call(
            "GET", f"/v1/conversations/{cid}/messages?after_seq=0", b_acc.token
        )
        assert status == 200
        assert [m["client_msg_id"] for m in history["messages"]] == ["retry-me", "http-first"]
        await a.close()


async def test_concurrent_senders_get_gap_free_seqs(tidings_server: RunningServer) -> None:
    """20 clients x 50 messages into one group: seqs 1..1000, no gap or repeat,
    and every member receives every other member's messages in seq order."""
    senders, per_sender = 20, 50
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        accounts = [await http.account() for _ in range(senders)]
        cid = await http.conversation(accounts[0], "group", accounts[1:])
        conns = [
            (await Raw.connect(session, tidings_server.ws_url, acc.token))[0] for acc in accounts
        ]

        async def run(index: int, conn: Raw) -> tuple[list[int], list[int]]:
            acked: list[int] = []
            received: list[int] = []
            for n in range(per_sender):
                await conn.send(
                    {
                        "type": "send",
                        "conversation_id": cid,
                        "client_msg_id": f"{index}-{n}",
                        "content": text(n),
                    }
                )
            expected_msgs = per_sender * (senders - 1)
            async with asyncio.timeout(WAIT_S * 6):
                while len(acked) < per_sender or len(received) < expected_msgs:
                    frame = await conn.recv(WAIT_S * 6)
                    if frame["type"] == "ack":
                        acked.append(frame["seq"])
                    elif frame["type"] == "msg":
                        received.append(frame["seq"])
                    else:
                        raise AssertionError(frame)
            return acked, received

        results = await asyncio.gather(*(run(i, c) for i, c in enumerate(conns)))
        all_acked = sorted(seq for acked, _ in results for seq in acked)
        assert all_acked == list(range(1, senders * per_sender + 1))
        for acked, received in results:
            inversions = [(a, b) for a, b in itertools.pairwise(received) if b < a]
            assert not inversions, f"messages arrived out of seq order: {inversions[:5]}"
            assert sorted(acked + received) == all_acked
        for conn in conns:
            await conn.close()
