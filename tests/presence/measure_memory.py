"""How much Redis memory presence costs per online user.

Run ``python -m tests.presence.measure_memory [--users N] [--sessions K]``:
it starts a throwaway redis-server (nothing else in it, so ``used_memory``
before and after is exact), fills it with N online users of K sessions each
plus a typing entry for every tenth user, and prints bytes per online user
two ways:

- ``used_memory`` delta / N: what the Redis process really grew by, all
  overheads included (main dictionary, expires dictionary, allocator);
- sum of ``MEMORY USAGE`` over the keys / N: per key, as Redis estimates it,
  which is what :func:`measure` returns on a shared Redis where the delta is
  polluted by other clients (the test suite uses this one).

Ids have the production shape (``u_``/``s_``/``c_`` + 32 hex digits), since
the id bytes are a large part of the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from tidings.presence.redis import RedisPresence

DEFAULT_USERS = 10_000
DEFAULT_SESSIONS = 2


def fake_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Measurement:
    users: int
    sessions_per_user: int
    user_keys: int
    memory_usage_bytes: int  # sum of MEMORY USAGE over the users' keys
    used_memory_delta: int | None  # INFO used_memory after - before, if exclusive
    encoding: str  # of a user's hash: listpack is the compact one

    @property
    def memory_usage_per_user(self) -> float:
        return self.memory_usage_bytes / self.users

    @property
    def used_memory_per_user(self) -> float | None:
        if self.used_memory_delta is None:
            return None
        return self.used_memory_delta / self.users


async def _used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def measure(
    url: str,
    prefix: str,
    *,
    users: int = DEFAULT_USERS,
    sessions: int = DEFAULT_SESSIONS,
    exclusive: bool = False,
) -> Measurement:
    """Fill ``prefix`` with ``users`` online users and measure (see module doc).

    ``exclusive``: nothing else writes to this Redis, so the ``used_memory``
    delta is meaningful. The caller removes the keys afterwards.
    """
    store = RedisPresence(url, prefix=prefix)
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        await store.start()
        user_ids = [fake_id("u") for _ in range(users)]
        before = await _used_memory(client) if exclusive else 0
        items = [(u, fake_id("s")) for u in user_ids for _ in range(sessions)]
        # Long TTLs: nothing may expire while we measure.
        await store.sessions_alive(items, 3600)
        after = await _used_memory(client) if exclusive else 0
        total = 0
        keys = [f"{prefix}pu:{u}" for u in user_ids]
        for start in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                _q = pipe.memory_usage(key, samples=0)
            total += sum(int(n or 0) for n in await pipe.execute())
        encoding = await client.object("ENCODING", keys[0])
        return Measurement(
            users=users,
            sessions_per_user=sessions,
            user_keys=len(keys),
            memory_usage_bytes=total,
            used_memory_delta=after - before if exclusive else None,
            encoding=bytes(encoding).decode() if isinstance(encoding, bytes) else str(encoding),
        )
    finally:
        await store.close()
        await client.aclose()


async def typing_bytes_per_entry(url: str, prefix: str, *, entries: int = 1000) -> float:
    """MEMORY USAGE per conversation with one typist (the common case)."""
    store = RedisPresence(url, prefix=prefix)
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        conversations = [fake_id("c") for _ in range(entries)]
        for conversation_id in conversations:
            await store.set_typing(conversation_id, fake_id("u"), 3600)
        total = 0
        for conversation_id in conversations:
            usage = await client.memory_usage(f"{prefix}pt:{conversation_id}", samples=0)
            total += int(usage or 0)
        return total / entries
    finally:
        await store.close()
        await client.aclose()


async def _main(users: int, sessions: int) -> None:
    from tests.services_redis import RedisServer

    server = RedisServer()
    server.start()
    try:
        m = await measure(server.url, "tidings:", users=users, sessions=sessions, exclusive=True)
        typing = await typing_bytes_per_entry(server.url, "tidings-typing:")
        client = aioredis.Redis.from_url(server.url, protocol=2)
        version = (await client.info("server"))["redis_version"]
        await client.aclose()
    finally:
        server.cleanup()
    print(f"redis {version}: {m.users} online users x {m.sessions_per_user} sessions")
    print(f"  user hash encoding: {m.encoding}")
    print(f"  used_memory delta:  {m.used_memory_per_user:.0f} bytes per online user")
    print(f"  MEMORY USAGE sum:   {m.memory_usage_per_user:.0f} bytes per online user")
    print(f"  typing:             {typing:.0f} bytes per conversation with one typist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    args = parser.parse_args()
    asyncio.run(_main(args.users, args.sessions))


if __name__ == "__main__":
    main()
