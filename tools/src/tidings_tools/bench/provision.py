"""Setting up a Tidings server for a run over its public HTTP API: users, tokens, conversations.

Why over HTTP and not through the store: the benchmark measures a server as
clients see it, and must also work against a server it did not start
(``--url``). Passwords are hashed with argon2, slow by design (tens of ms of
CPU each), so accounts are registered and logged in with bounded concurrency,
kept for the whole invocation (repeats reuse them), and the time spent is
reported separately from the measurement (``setup_s``).

Usernames are deterministic (``bench_00000``, ...) with one fixed password, so
a second run against the same long-lived server logs the existing accounts in
instead of failing on ``409 conflict``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp

# Requests in flight during setup: enough to keep both cores hashing, few
# enough not to queue argon2 work for minutes behind one another.
SETUP_CONCURRENCY = 16
# One HTTP call during setup, generous because argon2 calls queue up.
REQUEST_TIMEOUT_S = 120.0
# Attempts for a call answered 429/503 (or dropped), with this pause between them.
REQUEST_ATTEMPTS = 5
RETRY_PAUSE_S = 1.0
# Shared password of the benchmark accounts (at least 8 characters, docs/protocol.md).
PASSWORD = "bench-password"
USERNAME_PREFIX = "bench_"
DEVICE_NAME = "tidings-bench"


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    username: str
    user_id: str
    token: str


class SetupError(RuntimeError):
    """The server refused a setup call (the message says which and why)."""


class Provisioner:
    """Creates and remembers benchmark accounts and conversations on one Tidings server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.accounts: list[Account] = []
        self._groups: dict[int, str] = {}
        self._directs: dict[tuple[str, str], str] = {}

    async def ensure_accounts(self, count: int) -> list[Account]:
        """Return the first `count` benchmark accounts, registering and logging in new ones."""
        have = len(self.accounts)
        if count > have:
            async with self._session() as session:
                gate = asyncio.Semaphore(SETUP_CONCURRENCY)

                async def one(index: int) -> Account:
                    async with gate:
                        return await self._account(session, index)

                fresh = await asyncio.gather(*(one(i) for i in range(have, count)))
            self.accounts.extend(fresh)
        return self.accounts[:count]

    async def group(self, members: list[Account]) -> str:
        """A group of exactly these members, created by the first (cached by size)."""
        size = len(members)
        if size not in self._groups:
            creator, others = members[0], members[1:]
            body = {
                "kind": "group",
                "title": f"bench fan-out {size}",
                "members": [a.user_id for a in others],
            }
            async with self._session() as session:
                answer = await self._call(session, "/v1/conversations", body, creator.token)
            self._groups[size] = str(answer["conversation_id"])
        return self._groups[size]

    async def directs(self, pairs: list[tuple[Account, Account]]) -> list[str]:
        """The direct conversation of each pair (the server returns an existing one)."""
        missing = [p for p in pairs if (p[0].user_id, p[1].user_id) not in self._directs]
        if missing:
            async with self._session() as session:
                gate = asyncio.Semaphore(SETUP_CONCURRENCY)

                async def one(a: Account, b: Account) -> None:
                    async with gate:
                        body = {"kind": "direct", "members": [b.user_id]}
                        answer = await self._call(session, "/v1/conversations", body, a.token)
                    self._directs[(a.user_id, b.user_id)] = str(answer["conversation_id"])

                await asyncio.gather(*(one(a, b) for a, b in missing))
        return [self._directs[(a.user_id, b.user_id)] for a, b in pairs]

    # -- internals --------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=SETUP_CONCURRENCY)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _account(self, session: aiohttp.ClientSession, index: int) -> Account:
        username = f"{USERNAME_PREFIX}{index:05d}"
        credentials = {"username": username, "password": PASSWORD}
        await self._call(session, "/v1/auth/register", credentials, None, ok_conflict=True)
        login = await self._call(
            session, "/v1/auth/login", {**credentials, "device_name": DEVICE_NAME}, None
        )
        return Account(username, str(login["user_id"]), str(login["token"]))

    async def _call(
        self,
        session: aiohttp.ClientSession,
        path: str,
        body: dict[str, Any],
        token: str | None,
        ok_conflict: bool = False,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(REQUEST_ATTEMPTS):
            try:
                async with session.post(self.base_url + path, json=body, headers=headers) as answer:
                    if answer.status in (429, 503) and attempt + 1 < REQUEST_ATTEMPTS:
                        await asyncio.sleep(RETRY_PAUSE_S)
                        continue
                    if answer.status == 409 and ok_conflict:
                        return {}
                    if answer.status >= 400:
                        text = await answer.text()
                        raise SetupError(f"POST {path}: {answer.status} {text[:300]}")
                    data: dict[str, Any] = await answer.json()
                    return data
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempt + 1 == REQUEST_ATTEMPTS:
                    raise
                await asyncio.sleep(RETRY_PAUSE_S)
        raise SetupError(f"POST {path}: gave up after {REQUEST_ATTEMPTS} attempts")
