"""Helpers shared by the presence/typing/receipts end-to-end tests.

Every wait is bounded. Intervals are small (settings ``FAST``) so that grace
periods, heartbeats and TTLs run out within a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tests.wire import WAIT_S, Raw

# Small presence/typing timings for tests (the production defaults are seconds).
HEARTBEAT_MS = 600
GRACE_MS = 500
POLL_MS = 100
REFRESH_MS = 200
TYPING_TTL_MS = 600

FAST: dict[str, Any] = {
    "heartbeat_ms": HEARTBEAT_MS,
    "presence_grace_ms": GRACE_MS,
    "presence_poll_ms": POLL_MS,
    "presence_refresh_ms": REFRESH_MS,
    "typing_ttl_ms": TYPING_TTL_MS,
}

_fences = itertools.count()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def fence(conn: Raw, timeout: float = WAIT_S) -> list[dict[str, Any]]:
    """Every frame the server wrote before the answer to a fresh ``ping``
    (frames of one connection are in order), keepalive pongs left out."""
    name = f"fence-{next(_fences)}"
    await conn.send({"type": "ping", "id": name})
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await conn.recv(timeout)
            if frame["type"] == "_closed":
                raise AssertionError(f"closed while fencing: {frame}")
            if frame["type"] == "pong":
                if frame.get("id") == name:
                    return frames
                continue
            frames.append(frame)


async def quiet(conn: Raw, seconds: float) -> list[dict[str, Any]]:
    """Frames (pongs left out) that arrive within ``seconds``, then a fence."""
    frames: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = await conn.recv(seconds + 1)
                if frame["type"] == "_closed":
                    raise AssertionError(f"closed while listening: {frame}")
                if frame["type"] != "pong":
                    frames.append(frame)
    return frames + await fence(conn)


async def wait_presence(
    conn: Raw, user_id: str, status: str, timeout: float = WAIT_S
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until a ``presence`` frame says ``user_id`` is ``status``; that frame
    and every ``presence`` frame seen on the way (it included)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await conn.recv(timeout)
            if frame["type"] == "_closed":
                raise AssertionError(f"closed while waiting for {user_id} {status}: {frame}")
            if frame["type"] != "presence":
                continue
            seen.append(frame)
            if frame["user_id"] == user_id and frame["status"] == status:
                return frame, seen


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = WAIT_S, every_s: float = 0.05
) -> None:
    """Wait (bounded) until ``check()`` answers true."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(every_s)


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


@contextlib.asynccontextmanager
async def keepalive(conn: Raw, interval_s: float = HEARTBEAT_MS / 3000) -> AsyncIterator[None]:
    """Send ``ping`` every ``interval_s`` (the server closes a connection silent
    for two heartbeats); the pongs are skipped by the readers above."""

    async def run() -> None:
        for n in itertools.count():
            await asyncio.sleep(interval_s)
            try:
                await conn.send({"type": "ping", "id": f"ka-{n}"})
            except (ConnectionError, RuntimeError):
                return

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Typist:
    """A's side of a conversation: keeps the connection alive (a fenced ping
    every ``every_s``) and, while ``typing`` is set, refreshes ``typing start``
    before each ping, as a client does while its user types.

    ``hold()`` returns right after a refresh the server has handled (the
    fence's pong came back) and stops all traffic until ``resume()``: nothing
    is relayed meanwhile, so a ``typing`` frame another member receives then
    can only be a replay of the stored state.
    """

    def __init__(self, conn: Raw, conversation_id: str, every_s: float = 0.2) -> None:
        self.conn = conn
        self.cid = conversation_id
        self.every_s = every_s
        self.typing = False
        self.starts_sent = 0
        self.last_start = 0.0  # monotonic time of the last start the server handled
        self._stop_pending = False
        self._stop_sent = asyncio.Event()
        self._hold = False
        self._held = asyncio.Event()
        self._resume = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            sent_start = False
            if self._stop_pending:
                self._stop_pending = False
                await self.conn.send(
                    {"type": "typing", "conversation_id": self.cid, "state": "stop"}
                )
                self._stop_sent.set()
            elif self.typing:
                await self.conn.send(
                    {"type": "typing", "conversation_id": self.cid, "state": "start"}
                )
                sent_start = True
            frames = await fence(self.conn)
            errors = of_type(frames, "error")
            assert not errors, errors
            if sent_start:
                self.starts_sent += 1
                self.last_start = time.monotonic()
            if self._hold and (sent_start or not self.typing):
                self._hold = False
                self._held.set()
                await self._resume.wait()
                self._resume.clear()
            await asyncio.sleep(self.every_s)

    async def hold(self) -> None:
        self._held.clear()
        self._hold = True
        async with asyncio.timeout(WAIT_S):
            await self._held.wait()

    def resume(self) -> None:
        self._resume.set()

    async def stop_typing(self) -> None:
        """Send ``typing stop`` (on the next turn) and wait until it was handled."""
        self.typing = False
        self._stop_sent.clear()
        self._stop_pending = True
        async with asyncio.timeout(WAIT_S):
            await self._stop_sent.wait()
        await self.hold()
        self.resume()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # re-raises an assertion the loop failed with
