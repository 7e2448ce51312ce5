"""Helpers of the messaging end-to-end tests (edits, deletes, reactions,
hidden messages, member settings, retention): one send and its answer, a
whole sync, the current view and the listing, each wait bounded."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.wire import WAIT_S, Account, Http, Raw
from tidings.core.ids import now_ms

_ids = itertools.count()


async def send(
    conn: Raw, cid: str, content: dict[str, Any], client_msg_id: str | None = None
) -> dict[str, Any]:
    """Send ``content`` and return the server's answer to it: its ``ack`` or
    its ``error`` (frames of other types in between are skipped)."""
    ref = f"r{next(_ids)}"
    await conn.send(
        {
            "type": "send",
            "id": ref,
            "conversation_id": cid,
            "client_msg_id": client_msg_id or ref,
            "content": content,
        }
    )
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await conn.recv()
            if frame["type"] == "_closed":
                raise AssertionError(f"closed while waiting for the answer to {ref}: {frame}")
            if frame["type"] == "ack" and frame.get("id") == ref:
                return frame
            if frame["type"] == "error" and frame.get("ref") == ref:
                return frame


async def sent(conn: Raw, cid: str, content: dict[str, Any]) -> int:
    """Send ``content``, which must be accepted; its seq."""
    answer = await send(conn, cid, content)
    assert answer["type"] == "ack", answer
    seq: int = answer["seq"]
    return seq


async def refused(conn: Raw, cid: str, content: dict[str, Any]) -> str:
    """Send ``content``, which must be refused; the error code."""
    answer = await send(conn, cid, content)
    assert answer["type"] == "error", answer
    code: str = answer["code"]
    return code


async def sync(conn: Raw, **fields: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One sync request: the msg frames it produced and its sync_done (frames
    of other types, e.g. live frames of other conversations, are skipped)."""
    ref = f"s{next(_ids)}"
    await conn.send({"type": "sync", "id": ref, **fields})
    msgs: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await conn.recv()
            if frame["type"] == "msg":
                msgs.append(frame)
            elif frame["type"] == "sync_done" and frame.get("id") == ref:
                return msgs, frame
            elif frame["type"] == "_closed":
                raise AssertionError(f"closed during sync: {frame}")


async def flush(conn: Raw) -> None:
    """Wait until the server handled every frame sent on ``conn`` so far."""
    ref = f"p{next(_ids)}"
    await conn.send({"type": "ping", "id": ref})
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await conn.recv()
            if frame["type"] == "pong" and frame.get("id") == ref:
                return
            if frame["type"] == "_closed":
                raise AssertionError(f"closed while waiting for pong: {frame}")


async def history(http: Http, who: Account, cid: str, query: str = "") -> list[dict[str, Any]]:
    status, body = await http.call(
        "GET", f"/v1/conversations/{cid}/messages?limit=1000{query}", who.token
    )
    assert status == 200, body
    messages: list[dict[str, Any]] = body["messages"]
    return messages


async def view(http: Http, who: Account, cid: str) -> list[dict[str, Any]]:
    """``?view=current`` as ``who`` sees it."""
    return await history(http, who, cid, "&view=current")


async def listing(http: Http, who: Account, cid: str) -> dict[str, Any]:
    """``cid``'s item of ``who``'s ``GET /v1/conversations``."""
    status, body = await http.call("GET", "/v1/conversations", who.token)
    assert status == 200, body
    (item,) = [c for c in body["conversations"] if c["conversation_id"] == cid]
    return dict(item)


async def last_seq(http: Http, who: Account, cid: str) -> int:
    status, body = await http.call("GET", f"/v1/conversations/{cid}", who.token)
    assert status == 200, body
    seq: int = body["last_seq"]
    return seq


def entry(state: dict[str, Any], cid: str) -> dict[str, Any]:
    """``cid``'s entry of a ``sync_done``."""
    (found,) = [c for c in state["conversations"] if c["conversation_id"] == cid]
    return dict(found)


async def clock_past(ts: int) -> None:
    """Wait until the clock (the server's: same process) is past ``ts`` ms:
    a millisecond or two, bounded."""
    for _ in range(1000):
        if now_ms() > ts:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"the clock did not pass {ts}")
