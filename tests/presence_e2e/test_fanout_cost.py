"""Presence fan-out cost over 1000 real WebSocket connections (issue 5).

1000 members of one group connect at once, each subscribing to 5 other
members only. Every ``presence`` frame each connection receives during the
connect wave and until the poll settles is counted: a subscriber hears only
about the users it watches (a few frames each), never about the other 995,
and the total stays O(members), far below members² (a storm).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.presence_e2e.support import GRACE_MS, POLL_MS, REFRESH_MS
from tests.wire import WAIT_S, Account, Http, Raw

MEMBERS = 1000
WATCHED = 5
SETUP_CONCURRENCY = 50
# Per watched user: its state at subscribe (maybe offline), then online.
MAX_FRAMES_PER_WATCHED_USER = 3
SETTLE_POLLS = 5


class Member:
    def __init__(self, index: int, account: Account) -> None:
        self.index = index
        self.account = account
        self.watches: list[str] = []
        self.conn: Raw | None = None
        self.presence: list[dict[str, Any]] = []
        self.other: Counter[str] = Counter()
        self.reader: asyncio.Task[None] | None = None

    def latest(self, user_id: str) -> str | None:
        for frame in reversed(self.presence):
            if frame["user_id"] == user_id:
                return str(frame["status"])
        return None

    def settled(self) -> bool:
        return all(self.latest(u) == "online" for u in self.watches)

    async def read_until_fence(self) -> None:
        assert self.conn is not None
        while True:
            frame = await self.conn.recv(WAIT_S * 6)
            kind = frame["type"]
            if kind == "presence":
                self.presence.append(frame)
            elif kind == "pong" and frame.get("id") == "fence":
                return
            elif kind == "_closed":
                raise AssertionError(f"member {self.index} closed: {frame}")
            else:
                self.other[kind] += 1


@pytest.mark.slow
async def test_thousand_members_each_watching_five_get_only_their_changes(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await server_factory(
        presence_grace_ms=GRACE_MS, presence_poll_ms=POLL_MS, presence_refresh_ms=REFRESH_MS
    )
    http = Http(session, server.http_url)
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def account(i: int) -> Account:
        async with sem:
            return await http.account(f"pres{i:04d}_{server.port}")

    accounts = list(await asyncio.gather(*(account(i) for i in range(MEMBERS))))
    await http.conversation(accounts[0], "group", accounts[1:])
    members = [Member(i, acc) for i, acc in enumerate(accounts)]
    for m in members:
        m.watches = [accounts[(m.index + k) % MEMBERS].user_id for k in range(1, WATCHED + 1)]

    async def connect(m: Member) -> None:
        async with sem:
            m.conn, _ = await Raw.connect(session, server.ws_url, m.account.token)
            await m.conn.send({"type": "presence_subscribe", "user_ids": m.watches})
            m.reader = asyncio.create_task(m.read_until_fence())

    try:
        # The connect wave: everyone connects and subscribes at once.
        await asyncio.gather(*(connect(m) for m in members))
        deadline = time.monotonic() + WAIT_S
        while not all(m.settled() for m in members) and time.monotonic() < deadline:
            for task in [m.reader for m in members if m.reader and m.reader.done()]:
                task.result()
            await asyncio.sleep(0.05)
        stale = {
            (m.index, u): m.latest(u) for m in members for u in m.watches if m.latest(u) != "online"
        }
        assert not stale, (
            f"{len(stale)} (watcher, watched) pairs never saw the watched user, connected "
            f"throughout, as online; e.g. {sorted(stale.items())[:5]}"
        )
        # Let the poll run a few more times: nothing more may come.
        await asyncio.sleep(SETTLE_POLLS * POLL_MS / 1000)
        started = time.monotonic()
        for m in members:
            assert m.conn is not None
            await m.conn.send({"type": "ping", "id": "fence"})
        async with asyncio.timeout(WAIT_S * 3):
            await asyncio.gather(*(m.reader for m in members if m.reader))
        fenced_in = time.monotonic() - started

        total = 0
        per_user_max = 0
        for m in members:
            about = Counter(f["user_id"] for f in m.presence)
            strangers = set(about) - set(m.watches)
            assert not strangers, f"member {m.index} got presence of {len(strangers)} others"
            assert set(about) == set(m.watches), (m.index, about)  # state at once, each
            assert max(about.values()) <= MAX_FRAMES_PER_WATCHED_USER, (m.index, about)
            assert all(m.latest(u) == "online" for u in m.watches)
            total += len(m.presence)
            per_user_max = max(per_user_max, *about.values())
        assert total <= MAX_FRAMES_PER_WATCHED_USER * WATCHED * MEMBERS
        assert total < MEMBERS * MEMBERS // 50  # far below a quadratic storm
        print(
            f"\npresence frames for {MEMBERS} members watching {WATCHED} each: {total} "
            f"(at most {per_user_max} per watched user; fence {fenced_in:.2f}s)"
        )
    finally:
        for m in members:
            if m.reader is not None and not m.reader.done():
                m.reader.cancel()
        await asyncio.gather(*(m.reader for m in members if m.reader), return_exceptions=True)
        await asyncio.gather(*(m.conn.close() for m in members if m.conn), return_exceptions=True)
