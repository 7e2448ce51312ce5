"""A 1000-member group over 1000 real WebSocket connections.

One message reaches every member's connection; when every member
acknowledges it, the receipts the server sends stay O(members) in total
(coalesced ``receipt_summary`` frames to the sender), not O(members²).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.wire import WAIT_S, Account, Http, Raw

MEMBERS = 1000
SETUP_CONCURRENCY = 50


async def _accounts(http: Http, count: int) -> list[Account]:
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(i: int) -> Account:
        async with sem:
            return await http.account(f"member{i:04d}")

    return list(await asyncio.gather(*(one(i) for i in range(count))))


@pytest.mark.slow
async def test_thousand_member_group_fanout_and_receipts(tidings_server: RunningServer) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        http = Http(session, tidings_server.http_url)
        accounts = await _accounts(http, MEMBERS)
        sender_acc, others = accounts[0], accounts[1:]
        cid = await http.conversation(sender_acc, "group", others)
        sem = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def connect(acc: Account) -> Raw:
            async with sem:
                conn, _ = await Raw.connect(session, tidings_server.ws_url, acc.token)
                return conn

        conns = list(await asyncio.gather(*(connect(a) for a in accounts)))
        sender, receivers = conns[0], conns[1:]

        await sender.send(
            {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": "hello-all",
                "content": {"text": "hello, everyone"},
            }
        )
        ack = await sender.recv_type("ack")
        seq = ack["seq"]
        msgs = await asyncio.gather(*(r.recv_type("msg", WAIT_S * 3) for r in receivers))
        assert all(m["seq"] == seq and m["client_msg_id"] == "hello-all" for m in msgs)
        assert len(msgs) == MEMBERS - 1

        # Every member acknowledges (delivered, then read).
        for kind in ("delivered", "read"):
            await asyncio.gather(
                *(r.send({"type": kind, "conversation_id": cid, "seq": seq}) for r in receivers)
            )

        # The sender sees the counts converge through coalesced summaries.
        summaries = []
        async with asyncio.timeout(WAIT_S * 3):
            while True:
                frame = await sender.recv_type("receipt_summary", WAIT_S * 3)
                summaries.append(frame)
                if frame["read_count"] == MEMBERS:
                    break
        assert summaries[-1]["delivered_count"] == MEMBERS
        assert summaries[-1]["members"] == MEMBERS
        assert all(s["seq"] == seq for s in summaries)

        # Count every receipt-like frame that reached any connection: a ping
        # round trip per connection flushes what is in flight (frames are in order).
        kinds: Counter[str] = Counter()

        async def drain(conn: Raw, name: str) -> None:
            await conn.send({"type": "ping", "id": name})
            async with asyncio.timeout(WAIT_S * 3):
                while True:
                    frame = await conn.recv(WAIT_S * 3)
                    if frame["type"] == "pong" and frame.get("id") == name:
                        return
                    kinds[frame["type"]] += 1

        await asyncio.gather(*(drain(c, f"p{i}") for i, c in enumerate(conns)))
        total_receipt_frames = len(summaries) + kinds["receipt"] + kinds["receipt_summary"]
        # O(members): far below MEMBERS**2 (999,000); in practice a handful.
        assert kinds["receipt"] == 0
        assert total_receipt_frames <= MEMBERS
        print(
            f"\nreceipt frames for {MEMBERS} members acknowledging one message: "
            f"{total_receipt_frames} (summaries {len(summaries)})"
        )
        await asyncio.gather(*(c.close() for c in conns))
