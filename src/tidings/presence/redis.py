"""The Redis presence store: presence and typing shared by every node.

Layout (``{p}`` is the deployment prefix, ``tidings:`` by default):

``{p}pu:{user_id}`` - one hash per user, TTL ``LAST_SEEN_TTL_S`` (30 days)
    refreshed on every write:

    - ``s:{session_id}`` -> expiry, ms since the epoch on the Redis clock;
      one field per live session (connection), over all devices and nodes;
    - ``st`` -> ``away`` while the user said so (absent: online);
    - ``ls`` -> last_seen, ms.

``{p}pt:{conversation_id}`` - one sorted set per conversation with typists:
    member user_id, score = expiry in ms; key PEXPIREAT = the latest score,
    so the key disappears by itself when the last typist's TTL ends.

Why expiry *scores* rather than a key with PEXPIRE per session or per typist:

- A user's presence is one ``HGETALL`` of one key, and ``get`` of a thousand
  users is one pipelined round trip; with a key per session the node would
  have to know (or SCAN for) the session ids of other nodes' users.
- One key per user (instead of a key per session, one for the status and one
  for last_seen) is the cheapest layout in memory: a small hash is a single
  listpack allocation, whereas every extra key costs its own dictionary
  entries, object header and expiry entry, so the alternatives measured
  (a sorted set of sessions per user, a key per session, each plus a
  last_seen key) took markedly more memory per user (docs/benchmarks.md,
  "Figures behind design choices (from code comments)";
  ``python -m tests.presence.measure_memory`` reproduces this layout's figure).
- Liveness is decided against the Redis server's clock (``TIME`` inside the
  scripts and in the same pipeline as the reads), so nodes with skewed clocks
  agree, and a reader never sees an entry past its score: ``typing_in`` and
  ``get`` compare with "now" instead of trusting lazy expiry.
- The key TTLs are only garbage collection: a crashed node's sessions and a
  vanished typist's entry stop counting at their score, and the key goes when
  nothing in it can matter any more (30 days for users, so last_seen lives).

Writes that read-modify-write (a session's liveness, the status reset when an
offline user comes back, the key expiry of a typing set) are small Lua
scripts, atomic and one round trip each; many of them go in one pipeline.
Scripts run by EVALSHA and are loaded on ``NOSCRIPT`` (after a Redis restart).
Every key a command touches is one user's or one conversation's, so the
layout also fits Redis Cluster (no multi-key commands across slots).

Failures: every operation is bounded by ``OP_TIMEOUT_S`` and raises
``TidingsError(UNAVAILABLE)``; after a connection failure, calls fail at once
for ``DOWN_RETRY_S`` instead of each waiting for a connect timeout, so a node
whose Redis is down keeps chatting at full speed without presence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.presence import (
    LAST_SEEN_TTL_S,
    OFFLINE_NEVER_SEEN,
    Presence,
    Typing,
    UserStatus,
)
from tidings.presence.memory import check_status, ttl_ms

log = logging.getLogger("tidings.presence.redis")

T = TypeVar("T")

# Connecting to a healthy Redis on the same network takes a millisecond;
# presence is best-effort, so a caller (a handshake, a heartbeat) should not
# wait long for something it can do without.
CONNECT_TIMEOUT_S = 0.5
# Budget for one operation (one pipelined round trip) including waiting for a
# pooled connection. A healthy answer takes well under 5 ms; beyond half a
# second Redis is sick, and a stale typing dot is cheaper than a stalled
# connection handler.
OP_TIMEOUT_S = 0.5
# ``ping`` (readiness probe) must answer before the load balancer's own probe
# timeout (typically 1-5 s).
PING_TIMEOUT_S = 1.0
# After a connection failure, fail calls at once for this long rather than let
# every heartbeat wait for a connect timeout; the first call after it probes
# again. One probe per second is nothing for Redis, and presence comes back
# within a second of Redis coming back.
DOWN_RETRY_S = 1.0
# Connections per node: enough for concurrent handshakes and heartbeats (each
# operation holds one for a round trip of ~1 ms); a burst beyond waits for one
# (bounded by OP_TIMEOUT_S) instead of opening hundreds of sockets.
POOL_SIZE = 16
# Scripts per pipeline in ``sessions_alive``: a node may refresh tens of
# thousands of sessions at once; chunks keep each round trip (and the time
# Redis is busy with it) small and each under OP_TIMEOUT_S.
MAX_BATCH = 500

DEFAULT_PREFIX = "tidings:"

_KEEP_MS = LAST_SEEN_TTL_S * 1000

# Shared by the session scripts: Redis time in ms, and a prune of dead
# sessions that also reads last_seen. Integers are formatted with %d because
# Lua numbers are doubles, which Redis would otherwise print as 1.7e+12.
_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(key, now)
  local h = redis.call('HGETALL', key)
  local live, seen = 0, 0
  for i = 1, #h, 2 do
    local f = h[i]
    if string.sub(f, 1, 2) == 's:' then
      if tonumber(h[i + 1]) > now then
        live = live + 1
      else
        redis.call('HDEL', key, f)
      end
    elseif f == 'ls' then
      seen = tonumber(h[i + 1])
    end
  end
  return live, seen
end
"""

# KEYS[1] user hash; ARGV: session field, ttl ms, key ttl ms.
_LUA_ALIVE = (
    _LUA_COMMON
    + """
local now = now_ms()
local live, seen = prune(KEYS[1], now)
if live == 0 then
  redis.call('HDEL', KEYS[1], 'st')  -- they were offline: their old choice is over
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + tonumber(ARGV[2])),
  'ls', string.format('%d', math.max(seen, now)))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] user hash; ARGV: session field, grace ms, key ttl ms. Only a live
# session gets a grace period: one that already expired stays dead.
_LUA_GONE = (
    _LUA_COMMON
    + """
local now = now_ms()
local live, seen = prune(KEYS[1], now)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local grace = tonumber(ARGV[2])
  if grace > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + grace))
  else
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
redis.call('HSET', KEYS[1], 'ls', string.format('%d', math.max(seen, now)))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] typing zset; ARGV: user_id, ttl ms.
_LUA_TYPING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], string.format('%d', tonumber(last[2])))
return 1
"""


@dataclass(frozen=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> _Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


_ALIVE = _Script.of(_LUA_ALIVE)
_GONE = _Script.of(_LUA_GONE)
_TYPING = _Script.of(_LUA_TYPING)

_Call = tuple[_Script, str, tuple[str | int, ...]]


def _unavailable(message: str, retry_after_s: float = DOWN_RETRY_S) -> TidingsError:
    return TidingsError(
        ErrorCode.UNAVAILABLE, message, retry_after_ms=max(1, round(retry_after_s * 1000))
    )


def _now_from_time(reply: Any) -> int:
    """Redis ``TIME`` (redis-py gives (seconds, microseconds)) in ms."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class RedisPresence:
    """A :class:`~tidings.core.ports.presence.PresenceStore` on Redis (see the module doc)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._prefix = prefix
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=OP_TIMEOUT_S,  # waiting for a free pooled connection
            protocol=2,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=OP_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # fail fast; presence is best-effort
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._down_until = 0.0  # time.monotonic() before which calls fail at once
        self._up = True  # for logging transitions once, not every failed call
        self._closed = False

    @property
    def prefix(self) -> str:
        return self._prefix

    def _user_key(self, user_id: str) -> str:
        return f"{self._prefix}pu:{user_id}"

    def _typing_key(self, conversation_id: str) -> str:
        return f"{self._prefix}pt:{conversation_id}"

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Nothing to do up front: connections are made on first use, so a
        node may start before its Redis (``ping`` says when it is there)."""
        if self._closed:
            raise RuntimeError("RedisPresence is closed")

    async def close(self) -> None:
        """Close every connection (idempotent); stored state expires on its own."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        with contextlib.suppress(Exception):
            await self._pool.aclose()

    async def ping(self) -> None:
        """Readiness: raise ``UNAVAILABLE`` unless Redis answers within
        ``PING_TIMEOUT_S``. Not short-circuited by ``DOWN_RETRY_S``: a probe
        must see the truth, and a success re-enables every call at once."""
        if self._closed:
            raise _unavailable("presence store closed")
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._mark_down()
            raise _unavailable(f"redis presence unreachable: {exc!r}") from exc
        self._mark_up()

    # -- sessions ------------------------------------------------------------

    async def session_alive(self, user_id: str, session_id: str, ttl_s: float) -> None:
        await self.sessions_alive([(user_id, session_id)], ttl_s)

    async def sessions_alive(self, items: Iterable[tuple[str, str]], ttl_s: float) -> None:
        ttl = ttl_ms(ttl_s)
        calls: list[_Call] = [
            (_ALIVE, self._user_key(user_id), (f"s:{session_id}", ttl, _KEEP_MS))
            for user_id, session_id in items
        ]
        for start in range(0, len(calls), MAX_BATCH):
            chunk = calls[start : start + MAX_BATCH]
            await self._guarded(functools.partial(self._run_scripts, chunk))

    async def session_gone(self, user_id: str, session_id: str, grace_s: float) -> None:
        grace = ttl_ms(grace_s, allow_zero=True)
        call: _Call = (_GONE, self._user_key(user_id), (f"s:{session_id}", grace, _KEEP_MS))
        await self._guarded(lambda: self._run_scripts([call]))

    async def set_status(self, user_id: str, status: UserStatus) -> None:
        check_status(status)
        key = self._user_key(user_id)

        async def run() -> None:
            if status == "away":
                # MULTI: a key must never be left without its TTL.
                pipe = self._redis.pipeline(transaction=True)
                _q1 = pipe.hset(key, "st", "away")
                _q2 = pipe.pexpire(key, _KEEP_MS)
                await pipe.execute()
            else:
                await self._redis.hdel(key, "st")

        await self._guarded(run)

    async def get(self, user_ids: Iterable[str]) -> dict[str, Presence]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}

        async def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            _q: object = pipe.time()  # "now" on the same clock as the scores, same round trip
            for user_id in ids:
                _q = pipe.hgetall(self._user_key(user_id))
            return await pipe.execute()

        replies = await self._guarded(run)
        now = _now_from_time(replies[0])
        result: dict[str, Presence] = {}
        for user_id, fields in zip(ids, replies[1:], strict=True):
            result[user_id] = _aggregate(fields, now)
        return result

    # -- typing --------------------------------------------------------------

    async def set_typing(self, conversation_id: str, user_id: str, ttl_s: float) -> None:
        ttl = ttl_ms(ttl_s)
        call: _Call = (_TYPING, self._typing_key(conversation_id), (user_id, ttl))
        await self._guarded(lambda: self._run_scripts([call]))

    async def clear_typing(self, conversation_id: str, user_id: str) -> None:
        await self.clear_typing_for(user_id, [conversation_id])

    async def clear_typing_for(self, user_id: str, conversation_ids: Iterable[str]) -> None:
        keys = [self._typing_key(c) for c in dict.fromkeys(conversation_ids)]
        if not keys:
            return

        async def run() -> None:
            # ZREM of the last member deletes the key: nothing is left behind.
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                _q = pipe.zrem(key, user_id)
            await pipe.execute()

        await self._guarded(run)

    async def typing_in(self, conversation_ids: Iterable[str]) -> list[Typing]:
        ids = list(dict.fromkeys(conversation_ids))
        if not ids:
            return []

        async def run() -> list[Any]:
            # Read-only (entries past their score are skipped here and pruned
            # by the next set_typing), so it can be served by a replica.
            pipe = self._redis.pipeline(transaction=False)
            _q: object = pipe.time()
            for conversation_id in ids:
                _q = pipe.zrange(self._typing_key(conversation_id), 0, -1, withscores=True)
            return await pipe.execute()

        replies = await self._guarded(run)
        now = _now_from_time(replies[0])
        result: list[Typing] = []
        for conversation_id, entries in zip(ids, replies[1:], strict=True):
            live = [(bytes(m).decode(), int(score)) for m, score in entries if score > now]
            for user_id, expires in sorted(live):
                result.append(Typing(conversation_id, user_id, expires, expires - now))
        return result

    # -- plumbing ------------------------------------------------------------

    def _mark_down(self) -> None:
        if self._up:
            log.warning("redis presence unreachable; presence and typing are degraded")
        self._up = False
        self._down_until = time.monotonic() + DOWN_RETRY_S

    def _mark_up(self) -> None:
        if not self._up:
            log.info("redis presence reachable again")
        self._up = True
        self._down_until = 0.0

    async def _guarded(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` within ``OP_TIMEOUT_S``; every failure is ``UNAVAILABLE``."""
        if self._closed:
            raise _unavailable("presence store closed")
        wait = self._down_until - time.monotonic()
        if wait > 0:
            raise _unavailable("redis presence down (retrying shortly)", wait)
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                result = await op()
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            self._mark_down()
            log.debug("redis presence unreachable", exc_info=True)
            # Sockets to a Redis that went away are useless; start afresh.
            with contextlib.suppress(Exception):
                await self._pool.disconnect()
            raise _unavailable(f"redis presence unreachable: {exc!r}") from exc
        except RedisError as exc:
            # An answer, but an error (OOM, READONLY during a failover, ...):
            # Redis is up, so no fast-fail window; the caller still degrades.
            log.warning("redis presence error: %r", exc)
            raise _unavailable(f"redis presence error: {exc!r}") from exc
        self._mark_up()
        return result

    async def _run_scripts(self, calls: Sequence[_Call]) -> list[Any]:
        """EVALSHA every call in one pipeline; load and rerun the scripts
        Redis does not know (first use, or after a restart flushed them)."""
        results = await self._evalsha(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for script in {calls[i][0] for i in missing}:
                await self._redis.script_load(script.source)
            retried = await self._evalsha([calls[i] for i in missing])
            for i, reply in zip(missing, retried, strict=True):
                results[i] = reply
        for reply in results:
            if isinstance(reply, Exception):
                raise reply
        return results

    async def _evalsha(self, calls: Sequence[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, key, args in calls:
            _q = pipe.evalsha(script.sha, 1, key, *args)
        return await pipe.execute(raise_on_error=False)


def _aggregate(fields: dict[bytes, bytes], now: int) -> Presence:
    """One user's hash, read at ``now``, as :class:`Presence`."""
    if not fields:
        return OFFLINE_NEVER_SEEN
    alive = any(f.startswith(b"s:") and int(v) > now for f, v in fields.items())
    last_seen = int(fields.get(b"ls", b"0"))
    if not alive:
        return Presence("offline", last_seen)
    return Presence("away" if fields.get(b"st") == b"away" else "online", last_seen)
