"""Presence and typing for one node: best-effort, never in chat's way.

- **Sessions.** An open connection is a presence session: marked alive on
  ``welcome``, refreshed in one batch per ``presence_refresh_ms`` for all of
  the node's connections, and marked gone (with ``presence_grace_ms`` of
  grace) when it closes. A crashed node's sessions expire on their own.
- **Who is told.** Clients name the users they show (``presence_subscribe``)
  and get their current state at once. A node polls the presence backend
  for the union of what its clients watch, once per ``presence_poll_ms``, and
  pushes a change only to the connections watching that user: a 1000-member
  group costs each client the changes of the users it watches, not a storm.
- **Typing** is relayed over the bus to the conversation's members on every
  node (not stored), held in the backend with a TTL, cleared on ``stop``, on
  expiry and when the typist's last connection closes, and replayed after
  ``welcome`` only if it is live now.

Every backend call is guarded: when the presence backend is slow or down,
presence and typing degrade (``/readyz`` says so) and messages flow on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.events import TypingEvent, conversation_topic, encode_event
from tidings.core.frames import PresenceOut, TypingOut, encode
from tidings.core.membership import MemberCache
from tidings.core.ports.bus import Bus
from tidings.core.ports.presence import Presence, PresenceStore, UserStatus
from tidings.gateway.connection import Connection, State
from tidings.gateway.registry import LocalRegistry
from tidings.gateway.wsframe import text_frame
from tidings.observability.metrics import Metrics
from tidings.settings import Settings

log = logging.getLogger("tidings.presence")

# Users one connection may watch (FM3): a contact list, or a large group's roster.
MAX_WATCHED_PER_CONNECTION = 2000
# Sessions live this many refresh intervals without a refresh: one missed
# refresh (a slow backend) does not flap anyone offline.
SESSION_TTL_INTERVALS = 3


class PresenceHub:
    def __init__(
        self,
        store: PresenceStore,
        bus: Bus,
        registry: LocalRegistry,
        members: MemberCache,
        metrics: Metrics,
        settings: Settings,
    ) -> None:
        self._store = store
        self._bus = bus
        self._registry = registry
        self._members = members
        self._metrics = metrics
        self._grace_s = settings.presence_grace_ms / 1000
        self._refresh_s = settings.presence_refresh_ms / 1000
        self._poll_s = settings.presence_poll_ms / 1000
        self._ttl_s = settings.typing_ttl_ms / 1000
        self._typing_ms = settings.typing_ttl_ms
        self._typing_max = settings.typing_max_group_members
        self._watchers: dict[str, set[Connection]] = {}
        self._watching: dict[str, set[str]] = {}  # session -> users it watches
        self._typing_in: dict[str, set[str]] = {}  # session -> conversations it types in
        self._known: dict[str, Presence] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.degraded: str | None = None

    # -- plumbing --------------------------------------------------------------

    async def open(self) -> None:
        """Connect the backend (a failure only degrades presence) and start the loops."""
        await self._guarded(self._store.start())
        self._loops = [
            asyncio.create_task(
                self._every(self._refresh_s, self._refresh), name="presence-refresh"
            ),
            asyncio.create_task(self._every(self._poll_s, self._poll), name="presence-poll"),
        ]

    async def close(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._loops = []
        await self._store.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a backend call; a failure degrades presence, never the caller."""
        try:
            await coro
        except TidingsError as exc:
            self._degrade(exc.message)
        except Exception as exc:
            log.exception("presence call failed")
            self._degrade(str(exc))
        else:
            if self.degraded is not None:
                log.info("presence backend is back")
                self.degraded = None

    def _degrade(self, reason: str) -> None:
        if self.degraded is None:
            log.warning("presence degraded; chat goes on", extra={"reason": reason})
        self.degraded = reason

    async def _every(self, interval: float, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._guarded(step())

    async def ping(self) -> None:
        await self._store.ping()

    # -- sessions ----------------------------------------------------------------

    def opened(self, conn: Connection, conversation_ids: list[str]) -> None:
        """A session opened: it is alive, and it sees who types now (never stale)."""
        device = conn.device
        assert device is not None
        ttl = self._refresh_s * SESSION_TTL_INTERVALS
        self._spawn(self._guarded(self._store.session_alive(device.user_id, conn.session_id, ttl)))
        self._spawn(self._guarded(self._replay_typing(conn, conversation_ids)))

    async def _replay_typing(self, conn: Connection, conversation_ids: list[str]) -> None:
        for typing in await self._store.typing_in(conversation_ids):
            if typing.user_id == conn.user_id:
                continue
            frame = TypingOut(typing.conversation_id, typing.user_id, "start", typing.expires_in_ms)
            if conn.write(encode(frame)):
                self._metrics.frame_out("typing")

    def closed(self, conn: Connection) -> None:
        """A session closed: gone after the grace period; its typing stops now."""
        self._unwatch_all(conn)
        device = conn.device
        if device is None:
            return
        self._spawn(
            self._guarded(self._store.session_gone(device.user_id, conn.session_id, self._grace_s))
        )
        typing = self._typing_in.pop(conn.session_id, set())
        if typing and not self._registry.connections_of(device.user_id):
            self._spawn(self._guarded(self._stop_all_typing(device.user_id, typing)))

    async def _stop_all_typing(self, user_id: str, conversation_ids: set[str]) -> None:
        await self._store.clear_typing_for(user_id, conversation_ids)
        for cid in conversation_ids:
            await self._relay(cid, user_id, "stop")

    async def _refresh(self) -> None:
        items = [
            (conn.user_id, conn.session_id)
            for conn in self._registry.all_connections()
            if conn.state is State.OPEN
        ]
        if items:
            await self._store.sessions_alive(items, self._refresh_s * SESSION_TTL_INTERVALS)

    # -- the user's own frames -----------------------------------------------------

    async def set_status(self, conn: Connection, status: UserStatus) -> None:
        await self._guarded(self._store.set_status(conn.user_id, status))

    async def typing(self, conn: Connection, conversation_id: str, state: str) -> None:
        members = await self._members.get(conversation_id)
        if conn.user_id not in members:
            raise TidingsError(ErrorCode.NOT_MEMBER, "you are not a member of this conversation")
        if len(members) > self._typing_max:
            return  # not relayed in large groups (documented limit)
        sessions = self._typing_in.setdefault(conn.session_id, set())
        if state == "start":
            sessions.add(conversation_id)
            await self._guarded(self._store.set_typing(conversation_id, conn.user_id, self._ttl_s))
        else:
            sessions.discard(conversation_id)
            await self._guarded(self._store.clear_typing(conversation_id, conn.user_id))
        await self._relay(conversation_id, conn.user_id, state)

    async def _relay(self, conversation_id: str, user_id: str, state: str) -> None:
        event = TypingEvent(conversation_id, user_id, state, self._typing_ms)
        with contextlib.suppress(TidingsError):  # typing is best-effort
            await self._bus.publish(conversation_topic(conversation_id), encode_event(event))

    def deliver_typing(self, event: TypingEvent, members: frozenset[str]) -> None:
        """From the bus: show a typing change to the conversation's local members."""
        state: Literal["start", "stop"] = "start" if event.state == "start" else "stop"
        out = TypingOut(event.conversation_id, event.user_id, state, event.expires_ms)
        frame = text_frame(encode(out))
        sent = 0
        for user_id in members:
            if user_id != event.user_id:
                sent += self._registry.write_to_user(user_id, frame)
        if sent:
            self._metrics.frame_out("typing", sent)

    # -- who is told -------------------------------------------------------------------

    async def subscribe(self, conn: Connection, user_ids: list[str]) -> None:
        """Watch these users: their current state now, and every change after."""
        watching = self._watching.setdefault(conn.session_id, set())
        fresh = [u for u in dict.fromkeys(user_ids) if u not in watching]
        if len(watching) + len(fresh) > MAX_WATCHED_PER_CONNECTION:
            raise TidingsError(
                ErrorCode.BAD_FRAME,
                f"a connection may watch at most {MAX_WATCHED_PER_CONNECTION} users",
            )
        for user_id in fresh:
            watching.add(user_id)
            self._watchers.setdefault(user_id, set()).add(conn)
        if not fresh:
            return
        try:
            states = await self._store.get(fresh)
        except TidingsError as exc:
            self._degrade(exc.message)
            return
        for user_id in fresh:
            state = states[user_id]
            # Only a first look sets the snapshot: overwriting it would hide
            # from earlier watchers a change they have not been told yet (the
            # next poll tells them, and this newcomer gets it twice at worst).
            self._known.setdefault(user_id, state)
            self._send_presence(conn, user_id, state)

    def _unwatch_all(self, conn: Connection) -> None:
        for user_id in self._watching.pop(conn.session_id, set()):
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[user_id]
                    self._known.pop(user_id, None)

    def _send_presence(self, conn: Connection, user_id: str, state: Presence) -> None:
        frame = PresenceOut(user_id, state.status, state.last_seen)
        if conn.write(encode(frame)):
            self._metrics.frame_out("presence")

    async def _poll(self) -> None:
        """Push each watched user's change to the connections watching them."""
        if not self._watchers:
            return
        states = await self._store.get(list(self._watchers))
        for user_id, state in states.items():
            before = self._known.get(user_id)
            if before is not None and before.status == state.status:
                continue
            self._known[user_id] = state
            # A first look here means subscribe() could not read the state
            # (the backend was down): the watchers have not been told yet.
            for conn in tuple(self._watchers.get(user_id, ())):
                self._send_presence(conn, user_id, state)
