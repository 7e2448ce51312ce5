"""Read receipts over real sockets: monotonic under racing devices (and
nodes), and delivered to the sender across nodes through the Redis bus."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.presence_e2e.support import fence, of_type
from tests.wire import WAIT_S, Account, Http, Raw

MESSAGES = 150
ROUNDS = MESSAGES


async def _send_many(conn: Raw, cid: str, count: int, tag: str) -> int:
    """Send ``count`` messages, pipelined; the highest seq acknowledged."""
    await conn.send_burst(cid, tag, count)
    seqs: list[int] = [(await conn.recv_type("ack"))["seq"] for _ in range(count)]
    return max(seqs)


async def _cursor(http: Http, acc: Account, cid: str) -> dict[str, Any]:
    status, body = await http.call("GET", "/v1/conversations", acc.token)
    assert status == 200, body
    (row,) = [c for c in body["conversations"] if c["conversation_id"] == cid]
    return dict(row)


def _assert_monotonic(values: list[tuple[int, int]], what: str) -> None:
    for before, after in itertools.pairwise(values):
        assert (after[0] >= before[0], after[1] >= before[1]) == (True, True), (
            f"{what} moved backwards: {before} -> {after} in {values}"
        )


async def _receipts_until(conn: Raw, user_id: str, read_seq: int) -> list[dict[str, Any]]:
    """Receipt frames about ``user_id`` until one reports ``read_seq``, then
    whatever else is in flight (a fence)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while not got or got[-1]["read_seq"] < read_seq:
            frame = await conn.recv_type("receipt")
            if frame["user_id"] == user_id:
                got.append(frame)
    got += [f for f in of_type(await fence(conn), "receipt") if f["user_id"] == user_id]
    return got


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_read_cursors_from_racing_devices_never_move_backwards(
    server_factory: ServerFactory, session: aiohttp.ClientSession, backend: str
) -> None:
    node1 = await server_factory()
    # On PostgreSQL + Redis the two devices race from two nodes.
    node2: RunningServer = await server_factory() if backend == "postgres" else node1
    http = Http(session, node1.http_url)
    a1 = await http.account(device="phone")
    a2 = await http.login(a1.username, device="laptop")
    a3 = await http.login(a1.username, device="tablet")
    a4 = await http.login(a1.username, device="watch")
    b = await http.account()
    cid = await http.conversation(b, "direct", [a1])

    b_conn, _ = await Raw.connect(session, node1.ws_url, b.token)
    assert await _send_many(b_conn, cid, MESSAGES, "b") == MESSAGES
    dev1, _ = await Raw.connect(session, node1.ws_url, a1.token)
    dev2, _ = await Raw.connect(session, node2.ws_url, a2.token)
    dev3, _ = await Raw.connect(session, node1.ws_url, a3.token)
    dev4, _ = await Raw.connect(session, node2.ws_url, a4.token)
    devices = [dev1, dev2, dev3, dev4]
    b_far, _ = await Raw.connect(session, node2.ws_url, b.token)  # B on the other node too

    rng = random.Random(5)
    sent: list[int] = []
    seen_by_http: list[tuple[int, int]] = []

    async def look() -> None:
        row = await _cursor(http, a1, cid)
        seen_by_http.append((row["delivered_seq"], row["read_seq"]))

    for n in range(ROUNDS):
        # The newer cursor and an older one at once (e.g. read 5 and read 3),
        # on random devices, with the newest climbing so that most rounds move it.
        newer = max(1, n + 1 - rng.randint(0, 2))
        older = max(1, newer - rng.randint(1, 3))
        sent += [newer, older]
        order = rng.sample(devices, len(devices))
        seqs = [newer, older, max(1, older - 1), max(1, newer - 1)]
        await asyncio.gather(
            *(
                dev.send({"type": "read", "conversation_id": cid, "seq": seq})
                for dev, seq in zip(order, seqs, strict=True)
            ),
            *([look()] if n % 5 == 0 else []),
        )
    for dev in devices:  # every read handled (frames of one connection in order)
        assert of_type(await fence(dev), "error") == []
    top = max(sent)

    final = await _cursor(http, a1, cid)
    assert final["read_seq"] == top, (final, top)
    # (delivered_seq here is this device's own cursor: monotonic, checked below)
    seen_by_http.append((final["delivered_seq"], final["read_seq"]))
    _assert_monotonic(seen_by_http, "GET /v1/conversations (delivered, read)")

    for who, conn in (("B on node 1", b_conn), ("B on node 2", b_far)):
        receipts = await _receipts_until(conn, a1.user_id, top)
        cursors = [(r["delivered_seq"], r["read_seq"]) for r in receipts]
        _assert_monotonic(cursors, f"receipt frames to {who}")
        assert cursors[-1][1] == top
        assert all(d >= r for d, r in cursors), cursors

    for conn in (b_conn, b_far, *devices):
        await conn.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_receipts_reach_the_sender_across_nodes(
    server_factory: ServerFactory, session: aiohttp.ClientSession, backend: str
) -> None:
    node1 = await server_factory()
    node2 = await server_factory()
    http1 = Http(session, node1.http_url)
    sender = await http1.account()
    reader = await http1.account()
    cid = await http1.conversation(sender, "direct", [reader])

    s_conn, _ = await Raw.connect(session, node1.ws_url, sender.token)
    r_conn, _ = await Raw.connect(session, node2.ws_url, reader.token)
    last = await _send_many(s_conn, cid, 3, "s")
    got = [await r_conn.recv_type("msg") for _ in range(3)]  # through Redis to node 2
    assert [m["seq"] for m in got] == [last - 2, last - 1, last]

    await r_conn.send({"type": "delivered", "conversation_id": cid, "seq": last})
    await r_conn.send({"type": "read", "conversation_id": cid, "seq": last - 1})
    await r_conn.send({"type": "read", "conversation_id": cid, "seq": last})
    receipts = await _receipts_until(s_conn, reader.user_id, last)
    cursors = [(r["delivered_seq"], r["read_seq"]) for r in receipts]
    assert all(r["conversation_id"] == cid for r in receipts)
    _assert_monotonic(cursors, "receipt frames to the sender on node 1")
    assert cursors[0] == (last, 0), cursors
    assert cursors[-1] == (last, last), cursors

    # The HTTP view on the sender's node agrees.
    status, body = await http1.call("GET", f"/v1/conversations/{cid}/receipts", sender.token)
    assert status == 200, body
    (row,) = [m for m in body["members"] if m["user_id"] == reader.user_id]
    assert (row["delivered_seq"], row["read_seq"]) == (last, last)
    await s_conn.close()
    await r_conn.close()
