"""The resilient client: :class:`ResilientClient`, a thin asyncio driver.

Where :class:`~tidings_client.connection.TidingsClient` is one WebSocket
session that ends when the socket does, a :class:`ResilientClient` is a
*standing* session: it keeps reconnecting, keeps every send in a durable
outbox until it is acknowledged, and surfaces each conversation in seq order
without holes or duplicates, across drops, restarts of the app and restores of
the server. Every decision is made by the sans-I/O
:class:`~tidings_client.resilience.ResilientCore` (read its docstring for the
rules); this module only opens connections (one
:class:`~tidings_client.connection.TidingsClient` per connection), starts
tasks, and sleeps until the core's next deadline.

Public API::

    client = ResilientClient(ws_url, token, db_path="tidings.db")   # or ":memory:"
    await client.start()                   # returns at once; connects in the background
    cmid = client.send(conversation_id, "hi")   # on disk before it returns
    client.send(conversation_id, "yes", reply_to=7, mentions=[bob_id])
    client.edit(conversation_id, 8, "yes!"); client.react(conversation_id, 7, "👍")
    client.delete(conversation_id, 8)
    async for event in client.events():    # until close()
        match event:
            case Message():           ...  # in seq order per conversation, exactly once
            case MessageSent():       ...  # acked: durable on the server
            case SendFailed():        ...  # kept: client.retry(cmid) / client.discard(cmid)
            case EpochChanged():      ...  # the server was restored from a backup
            case HistoryGap():        ...  # older messages are gone from the server (retention)
            case Notice():            ...  # e.g. "restored": show event.text to the user
            case ConnectionChanged(): ...  # connecting / online / offline (retry_in) / stopped
            case _:                   ...  # receipts, typing, presence, ... as TidingsClient
    client.not_on_server(conversation_id)  # others' messages a restore lost: mark them
    client.wake_up()                       # app foregrounded: resync now / reconnect now
    await client.close()                   # the outbox stays on disk

``Message`` events include this user's own messages (built from their ack),
so that an app can render a conversation from the event stream (or from
:attr:`ResilientClient.store`) alone. The store and the outbox live in
``db_path`` (separate files with ``outbox_path=`` / ``store_path=``); a new
``ResilientClient`` on the same files resumes from the stored cursors and
sends whatever the previous process left in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from types import TracebackType
from typing import Any

import aiohttp

from tidings_client.backoff import Backoff
from tidings_client.connection import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_SYNC_TIMEOUT_S,
    ClientEvent,
    TidingsClient,
)
from tidings_client.cursors import Cursors
from tidings_client.errors import (
    ConnectionClosedError,
    RequestTimeoutError,
    TidingsClientError,
)
from tidings_client.frames import Content, Message, Network, Notice, Reconnect
from tidings_client.kinds import delete_content, edit_content, message_content, reaction_content
from tidings_client.outbox import Outbox, OutboxEntry
from tidings_client.protocol import DEFAULT_CLIENT_NAME
from tidings_client.resilience import (
    Command,
    Connect,
    Disconnect,
    RequestSync,
    ResilienceConfig,
    ResilientCore,
    ResilientEvent,
    SendDelivered,
    SendReconcile,
    Transmit,
)
from tidings_client.store import MessageStore

logger = logging.getLogger("tidings_client.resilient")

# Events buffered for the app. Unlike TidingsClient the reader never blocks on
# a full queue (the core must keep running its timers), so this is large;
# messages are in the store anyway, the queue is a notification stream.
DEFAULT_MAX_EVENTS = 100_000
# Codes on which reconnecting cannot help: the token is bad.
FATAL_CONNECT_CODES = frozenset({"unauthorized"})

AppEvent = ResilientEvent | ClientEvent


class _RecordingCursors(Cursors):
    """Cursors that record but never report a duplicate.

    The core deduplicates against its store, across connections and epochs;
    the per-connection protocol only needs the cursors to page a sync. Its own
    deduplication would hide messages the core asks for again (an epoch
    check re-reads seqs it already saw), so it is disabled here.
    """

    def observe(self, conversation_id: str, seq: int) -> bool:
        super().observe(conversation_id, seq)
        return True

    def set(self, conversation_id: str, seq: int) -> None:
        """Explicit sync cursors are the core's business; recording them could
        make a later page skip seqs this connection never received."""


class ResilientClient:
    """A self-healing session over a durable outbox and message store.

    ``config`` tunes timeouts, attempts and backoff
    (:class:`~tidings_client.resilience.ResilienceConfig`); ``backoff`` replaces
    the schedule (e.g. seeded). Nothing happens before :meth:`start`.
    """

    def __init__(
        self,
        ws_url: str,
        token: str,
        *,
        db_path: str = ":memory:",
        outbox_path: str | None = None,
        store_path: str | None = None,
        config: ResilienceConfig | None = None,
        backoff: Backoff | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
        network: Network = "unknown",
        heartbeat: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.outbox = Outbox(outbox_path or db_path)
        self.store = MessageStore(store_path or db_path)
        self.core = ResilientCore(self.outbox, self.store, config, backoff=backoff)
        self._client_name = client_name
        self._network: Network = network
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._sync_timeout = sync_timeout
        self._events: asyncio.Queue[AppEvent] = asyncio.Queue(max_events)
        self._conn: TidingsClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self._online = asyncio.Event()
        self._notice: Notice | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background) and flushing the outbox."""
        if self._timer is not None:
            return
        self._session = aiohttp.ClientSession()
        self._timer = asyncio.create_task(self._timer_loop(), name="tidings-resilient")
        self.core.start(_now())
        self._drain()

    async def close(self) -> None:
        """Stop: close the connection and the stores. Unsent messages stay in the outbox."""
        if self._closed:
            return
        self._closed = True
        self.core.stop()
        self._drain()
        if self._timer is not None:
            self._timer.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        for task in [*self._tasks, *([self._timer] if self._timer else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        self.outbox.close()
        self.store.close()

    async def __aenter__(self) -> ResilientClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- app calls ----------------------------------------------------------------------

    def send(
        self,
        conversation_id: str,
        content: Content | str,
        client_msg_id: str | None = None,
        *,
        reply_to: int | None = None,
        mentions: Iterable[str] = (),
        mention_all: bool = False,
        forwarded: bool = False,
    ) -> str:
        """Queue a message: committed to the outbox before this returns, sent when possible.

        A str is a text message; ``reply_to`` (a seq), ``mentions`` (user ids),
        ``mention_all`` (groups only) and ``forwarded`` go with it
        (:func:`~tidings_client.kinds.text_content`). Returns its
        client_msg_id. The outcome is a :class:`MessageSent` or
        :class:`SendFailed` event (``forbidden`` / ``not_found`` come as
        ``retryable=False``, like any refusal).
        """
        body = message_content(
            content,
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
            forwarded=forwarded,
        )
        cmid = self.core.send(_now(), conversation_id, body, client_msg_id)
        self._drain()
        return cmid

    def edit(
        self, conversation_id: str, target: int, text: str, client_msg_id: str | None = None
    ) -> str:
        """Queue an edit of our own message at seq ``target``; see :meth:`send`."""
        return self.send(conversation_id, edit_content(target, text), client_msg_id)

    def delete(self, conversation_id: str, target: int, client_msg_id: str | None = None) -> str:
        """Queue the deletion for everyone of the message at seq ``target``; see :meth:`send`."""
        return self.send(conversation_id, delete_content(target), client_msg_id)

    def react(
        self,
        conversation_id: str,
        target: int,
        emoji: str,
        on: bool = True,
        client_msg_id: str | None = None,
    ) -> str:
        """Queue switching our ``emoji`` on the message at seq ``target``; see :meth:`send`.

        Toggles from several devices converge: the server keeps them in seq
        order and the last one counts.
        """
        return self.send(conversation_id, reaction_content(target, emoji, on), client_msg_id)

    def retry(self, client_msg_id: str) -> None:
        """Send a failed-and-kept entry again, with fresh attempts."""
        self.core.retry(_now(), client_msg_id)
        self._drain()

    def discard(self, client_msg_id: str) -> bool:
        """Drop an outbox entry for good; ``False`` if there was none."""
        removed = self.core.discard(client_msg_id)
        self._drain()
        return removed

    def wake_up(self) -> None:
        """The app came to the foreground: resync every conversation, or reconnect now."""
        self.core.wake_up(_now())
        self._drain()

    @property
    def online(self) -> bool:
        return self.core.online

    @property
    def connection(self) -> TidingsClient | None:
        """The current connection, if any (tests use it to cut the link)."""
        return self._conn

    @property
    def cursors(self) -> dict[str, int]:
        """Per conversation, the seq up to which every message is stored."""
        return self.core.cursors

    @property
    def notice(self) -> Notice | None:
        """The server's last ``notice`` (e.g. code ``restored`` after a restore
        from backup), kept across reconnects; also an event."""
        return self._notice

    def not_on_server(self, conversation_id: str | None = None) -> list[Message]:
        """Other people's messages this device holds that the server lost in a
        restore (:meth:`~tidings_client.store.MessageStore.not_on_server`)."""
        return self.store.not_on_server(conversation_id)

    def pending(self) -> list[OutboxEntry]:
        """The outbox, in send order (pending, failed and rejected entries)."""
        return self.core.entries()

    async def wait_online(self, timeout: float) -> None:
        """Wait (bounded) until a connection is open; :class:`RequestTimeoutError` if not."""
        try:
            async with asyncio.timeout(timeout):
                while not self.core.online:
                    self._online.clear()
                    await self._online.wait()
        except TimeoutError:
            raise RequestTimeoutError(f"not online within {timeout}s") from None

    async def next_event(self, timeout: float | None = None) -> AppEvent:
        """The next event; :class:`RequestTimeoutError` if none comes in time."""
        try:
            async with asyncio.timeout(timeout):
                return await self._events.get()
        except TimeoutError:
            raise RequestTimeoutError(f"no event within {timeout}s") from None

    async def events(self) -> AsyncIterator[AppEvent]:
        """Every event, until :meth:`close`."""
        while not self._closed or not self._events.empty():
            try:
                yield await self.next_event(timeout=1.0)
            except RequestTimeoutError:
                continue

    # -- machinery -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Carry out the core's commands and queue its events; called after every input."""
        for command in self.core.take_commands():
            self._execute(command)
        for event in self.core.take_events():
            self._emit(event)
        if self.core.online:
            self._online.set()
        self._wakeup.set()  # the next deadline may have moved

    def _emit(self, event: AppEvent) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # Messages are in the store; only the notification is lost.
            logger.warning("tidings: event queue full; dropped %r", type(event).__name__)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _execute(self, command: Command) -> None:
        if self._closed and not isinstance(command, Disconnect):
            return
        conn = self._conn
        if isinstance(command, Connect):
            self._spawn(self._connect(command.epoch), "tidings-connect")
        elif isinstance(command, Disconnect):
            if conn is not None:
                self._spawn(conn.close(), "tidings-disconnect")
        elif conn is None:
            return  # the core learns of the drop from the reader and resends then
        elif isinstance(command, Transmit):
            self._spawn(self._transmit(conn, command), "tidings-send")
        elif isinstance(command, RequestSync):
            self._spawn(self._sync(conn, command.cursors), "tidings-sync")
        elif isinstance(command, SendDelivered):
            self._spawn(self._delivered(conn, command), "tidings-delivered")
        elif isinstance(command, SendReconcile):
            self._spawn(self._reconcile(conn, command), "tidings-reconcile")

    async def _connect(self, epoch: str | None) -> None:
        try:
            conn = await TidingsClient.connect(
                self.ws_url,
                self.token,
                client_name=self._client_name,
                network=self._network,
                epoch=epoch,
                heartbeat=self._heartbeat,
                cursors=_RecordingCursors(),
                session=self._session,
                timeout=self._connect_timeout,
            )
        except TidingsClientError as exc:
            retry_after = None if exc.retry_after_ms is None else exc.retry_after_ms / 1000
            fatal = exc.code in FATAL_CONNECT_CODES
            self.core.connect_failed(_now(), str(exc), retry_after, fatal)
            self._drain()
            return
        except (aiohttp.ClientError, OSError) as exc:
            self.core.connect_failed(_now(), f"cannot connect: {exc}")
            self._drain()
            return
        if self._closed:
            await conn.close()
            return
        self._conn = conn
        self.core.connected(_now(), conn.welcome)
        self._drain()
        self._spawn(self._read(conn), "tidings-read")

    async def _read(self, conn: TidingsClient) -> None:
        """Feed the connection's events to the core until it closes."""
        reason = ""
        try:
            async for event in conn.events():
                if isinstance(event, Message):
                    self.core.message_received(_now(), event)
                elif isinstance(event, Reconnect):
                    self.core.reconnect_requested(_now(), event.after_ms, event.reason)
                else:
                    if isinstance(event, Notice):
                        self._notice = event
                    self._emit(event)
                self._drain()
        except TidingsClientError as exc:
            reason = str(exc)
        finally:
            if self._conn is conn:
                self._conn = None
            await conn.close()
        if not reason:
            reason = f"connection closed (code {conn.close_code})"
        self.core.disconnected(_now(), reason)
        self._drain()

    async def _transmit(self, conn: TidingsClient, command: Transmit) -> None:
        # The core owns the ack timeout; this wait only has to outlive it so a
        # late ack is still reported (one ack settles every attempt).
        timeout = self.core.config.ack_timeout * (self.core.config.max_attempts + 1)
        try:
            ack = await conn.send(
                command.conversation_id, command.content, command.client_msg_id, timeout=timeout
            )
        except (ConnectionClosedError, RequestTimeoutError):
            return  # the core counts it on disconnect / at its own deadline
        except TidingsClientError as exc:
            if exc.code == "invalid_state":
                return  # the connection is closing; the reader reports it
            retry_after = None if exc.retry_after_ms is None else exc.retry_after_ms / 1000
            self.core.send_error(_now(), command.client_msg_id, exc.code, exc.message, retry_after)
        else:
            self.core.ack_received(_now(), ack)
        self._drain()

    async def _sync(self, conn: TidingsClient, cursors: dict[str, int]) -> None:
        try:
            result = await conn.sync(cursors or None, timeout=self._sync_timeout)
        except ConnectionClosedError:
            return  # the reader reports the drop; the next connection resyncs
        except TidingsClientError as exc:
            if conn.closed:
                return
            self.core.sync_failed(_now(), str(exc))
        else:
            self.core.sync_completed(_now(), result)
        self._drain()

    async def _reconcile(self, conn: TidingsClient, command: SendReconcile) -> None:
        epoch = command.report.epoch
        try:
            await conn.reconcile(command.report)
        except ConnectionClosedError:
            return  # the reader reports the drop; the next connection sends it again
        except TidingsClientError as exc:
            if conn.closed:
                return
            logger.warning("tidings: reconcile report not stored: %s", exc)
            self.core.reconcile_failed(_now(), epoch, exc.code, exc.retryable)
        else:
            self.core.reconcile_sent(_now(), epoch)
        self._drain()

    async def _delivered(self, conn: TidingsClient, command: SendDelivered) -> None:
        # Best effort: a lost delivered only means the server redelivers,
        # which the core deduplicates.
        with contextlib.suppress(TidingsClientError):
            await conn.delivered(command.conversation_id, command.seq)

    async def _timer_loop(self) -> None:
        """Sleep until the core's next deadline (or new input), then tick."""
        while not self._closed:
            deadline = self.core.next_deadline()
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
            else:
                delay = deadline - _now()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
            self.core.tick(_now())
            for command in self.core.take_commands():
                self._execute(command)
            for event in self.core.take_events():
                self._emit(event)
            if self.core.online:
                self._online.set()


def _now() -> float:
    return time.monotonic()
