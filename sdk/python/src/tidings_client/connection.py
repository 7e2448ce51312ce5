"""The asyncio WebSocket client: :class:`TidingsClient`.

A thin adapter around the sans-I/O :class:`~tidings_client.protocol.ClientProtocol`:
one reader task feeds every received frame to the protocol and routes the
resulting events (answers to the futures of their callers, everything else to
the application's event queue); calls queue frames in the protocol and flush
them to the socket. All protocol decisions live in the core; this module only
owns tasks, futures and timeouts.

Delivery rules an application should know:

- ``events()`` yields :data:`ClientEvent`: live messages, receipts, typing,
  presence, this user's hidden messages and conversation state (changed on
  any of their devices), ``reconnect``, unsolicited errors, and unknown or
  broken frames.
  Acks, pongs and sync pages go to the calls that asked for them.
- Messages that arrive while :meth:`TidingsClient.sync` runs are returned by
  that sync and are *not* repeated in ``events()``; every message reaches the
  application once per client (duplicates by (conversation_id, seq) are dropped).
- The event queue is bounded (``max_queue``). When it is full the reader stops
  reading, so nothing is dropped, but answers (acks, pongs) wait too: consume
  ``events()`` while awaiting ``send``. A consumer stalled for longer than
  ``heartbeat_ms`` loses the connection, because the heartbeat's pong is not
  read in time; the cursors make the next connection's sync pick up the rest.
- ``sync()`` sends only the cursors it is given; to resume from what this
  client holds, pass ``client.cursors.snapshot()``.
- The SDK does not send ``delivered`` by itself: call :meth:`TidingsClient.delivered`
  once a message is stored, or the server redelivers it after a while.

Every wait is bounded: connect, each request and each write have timeouts,
and the heartbeat closes a connection whose ``pong`` does not come back, which
also ends ``events()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable
from types import TracebackType
from typing import Any

import aiohttp

from tidings_client.cursors import Cursors
from tidings_client.errors import (
    ConnectionClosedError,
    InvalidStateError,
    RequestTimeoutError,
    TidingsClientError,
)
from tidings_client.frames import (
    Ack,
    Content,
    ConversationState,
    Hidden,
    Message,
    Network,
    Notice,
    OwnPresence,
    Pong,
    Presence,
    Receipt,
    ReceiptSummary,
    Reconciled,
    ReconcileRequest,
    Reconnect,
    ServerError,
    SyncDone,
    Typing,
    TypingState,
    Welcome,
)
from tidings_client.kinds import delete_content, edit_content, message_content, reaction_content
from tidings_client.protocol import (
    DEFAULT_CLIENT_NAME,
    ClientProtocol,
    Closed,
    Event,
    ProtocolViolation,
    RequestFailed,
    State,
    SyncComplete,
    SyncResult,
    UnknownFrame,
)

logger = logging.getLogger("tidings_client")

# Opening the socket plus hello/welcome; a server that sheds load answers 503
# at once, so 10 s only waits out a slow but healthy handshake.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# A send is acked once durable (one store transaction): seconds at worst.
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# A whole sync, all pages: generous because a long-offline client may fetch a lot.
DEFAULT_SYNC_TIMEOUT_S = 60.0
# Writing queued frames; past this the socket is stuck and the connection is dropped.
WRITE_TIMEOUT_S = 10.0
# Closing handshake; a dead peer must not hold close() longer than this.
CLOSE_TIMEOUT_S = 5.0
# Events buffered for the application before the reader stops reading
# (back-pressure, never loss). Several sync pages of messages fit.
DEFAULT_MAX_QUEUE = 4096
# Largest frame accepted from the server. The server's own limit for frames is
# 1 MiB; 4 MiB leaves room for a server configured higher.
MAX_INCOMING_FRAME_BYTES = 4 * 1024 * 1024
# Heartbeat period bounds. The period is heartbeat_ms / 2 so that the server
# always hears from us within heartbeat_ms (docs/protocol.md), capped at a minute
# because NAT boxes forget idle flows after a few minutes; the floor only
# guards against a server announcing 0 (which would make the loop spin).
MIN_HEARTBEAT_INTERVAL_S = 0.05
MAX_HEARTBEAT_INTERVAL_S = 60.0
# WebSocket close code for "unauthorized" (docs/protocol.md).
CLOSE_UNAUTHORIZED = 4001
# A typing ``start`` is refreshed this often while the user types (docs/protocol.md:
# "refresh start every few seconds"), and at least this fraction of the
# server's TTL, so that a short TTL still never lapses between refreshes.
TYPING_REFRESH_S = 3.0
TYPING_REFRESH_FRACTION = 0.6

# What events()/next_event() yield.
ClientEvent = (
    Message
    | Receipt
    | ReceiptSummary
    | Typing
    | Presence
    | Reconnect
    | Notice
    | Hidden
    | ConversationState
    | ServerError
    | UnknownFrame
    | ProtocolViolation
)


def error_from_frame(error: ServerError) -> TidingsClientError:
    """The exception for an ``error`` frame, keeping its code and retry hints."""
    return TidingsClientError(
        error.code,
        error.message,
        retryable=error.retryable,
        retry_after_ms=error.retry_after_ms,
    )


class TidingsClient:
    """One authenticated WebSocket session; create it with :meth:`connect`."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession,
        protocol: ClientProtocol,
        *,
        owns_session: bool,
        max_queue: int,
    ) -> None:
        self._ws = ws
        self._session = session
        self._owns_session = owns_session
        self._protocol = protocol
        self._events: asyncio.Queue[ClientEvent] = asyncio.Queue(max_queue)
        self._closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self._welcome_waiter: asyncio.Future[Welcome] = loop.create_future()
        self._send_waiters: dict[str, list[asyncio.Future[Ack]]] = {}
        self._request_waiters: dict[str, asyncio.Future[None]] = {}
        self._sync_waiter: tuple[str, asyncio.Future[SyncResult]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._typing_timers: dict[str, asyncio.Task[None]] = {}
        self.close_code: int | None = None
        self.close_reason = ""

    # -- lifecycle ---------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        ws_url: str,
        token: str,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        network: Network = "unknown",
        epoch: str | None = None,
        heartbeat: bool = True,
        cursors: Cursors | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> Connecting:
        """Open the socket, send ``hello`` and wait for ``welcome``: either
        ``client = await TidingsClient.connect(...)`` or ``async with
        TidingsClient.connect(...) as client:`` (closed at the block's end).

        Raises :class:`TidingsClientError` with the server's code when it
        answers with ``error`` (``unauthorized``, ...) or closes with 4001, with
        code ``unavailable`` (and ``retry_after_ms``) when it sheds load with a
        503, and :class:`RequestTimeoutError` when no welcome comes in time.
        Pass ``cursors`` from a previous client to keep deduplicating across
        connections, and ``session`` to share an aiohttp session (it is then
        not closed by :meth:`close`).
        """
        return Connecting(
            cls._connect(
                ws_url,
                token,
                client_name=client_name,
                network=network,
                epoch=epoch,
                heartbeat=heartbeat,
                cursors=cursors,
                session=session,
                timeout=timeout,
                max_queue=max_queue,
            )
        )

    @classmethod
    async def _connect(
        cls,
        ws_url: str,
        token: str,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        network: Network = "unknown",
        epoch: str | None = None,
        heartbeat: bool = True,
        cursors: Cursors | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> TidingsClient:
        owns_session = session is None
        http = session if session is not None else aiohttp.ClientSession()
        try:
            async with asyncio.timeout(timeout):
                ws = await _open_socket(http, ws_url)
        except TimeoutError:
            if owns_session:
                await http.close()
            raise RequestTimeoutError(
                f"no WebSocket connection to {ws_url} in {timeout}s"
            ) from None
        except BaseException:
            if owns_session:
                await http.close()
            raise
        client = cls(
            ws, http, ClientProtocol(cursors), owns_session=owns_session, max_queue=max_queue
        )
        try:
            await client._open(token, client_name, network, epoch, timeout)
        except BaseException:
            await client.close()
            raise
        if heartbeat:
            client._heartbeat = asyncio.create_task(client._heartbeat_loop(), name="tidings-ping")
        return client

    async def _open(
        self,
        token: str,
        client_name: str,
        network: Network,
        epoch: str | None,
        timeout: float,
    ) -> None:
        self._protocol.hello(token, client_name=client_name, network=network, epoch=epoch)
        self._reader = asyncio.create_task(self._read_loop(), name="tidings-reader")
        await self._flush()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._welcome_waiter)
        except TimeoutError:
            raise RequestTimeoutError(f"no welcome within {timeout}s") from None

    async def close(self) -> None:
        """Close the connection and wait (bounded) for its tasks; idempotent."""
        for timer in self._typing_timers.values():
            timer.cancel()
        self._typing_timers.clear()
        if self._protocol.state not in (State.CLOSING, State.CLOSED):
            self._protocol.close()
        if self._heartbeat is not None and self._heartbeat is not asyncio.current_task():
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close()
        if self._reader is not None:
            if not self._reader.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await asyncio.shield(self._reader)
            if not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        else:
            self._connection_lost()
        if self._owns_session and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> TidingsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def welcome(self) -> Welcome:
        """The server's ``welcome`` (user, device, session, epoch, limits)."""
        welcome = self._protocol.welcome
        if welcome is None:
            raise InvalidStateError("no welcome received")
        return welcome

    @property
    def notice(self) -> Notice | None:
        """The server's ``notice`` on this connection, if any (e.g. code ``restored``
        after a restore from backup); also yielded by :meth:`events`."""
        return self._protocol.notice

    @property
    def cursors(self) -> Cursors:
        """What this client holds per conversation; share it with the next connection."""
        return self._protocol.cursors

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- calls ---------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        content: Content | str,
        client_msg_id: str | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        *,
        reply_to: int | None = None,
        mentions: Iterable[str] = (),
        mention_all: bool = False,
        forwarded: bool = False,
    ) -> Ack:
        """Send a message and wait until it is durable.

        A str is a text message; ``reply_to`` (a seq), ``mentions`` (user ids),
        ``mention_all`` (groups only) and ``forwarded`` go with it
        (:func:`~tidings_client.kinds.text_content`). Retrying after a timeout
        or a retryable error with the *same* ``client_msg_id`` is safe: the
        server answers with the original seq and ``duplicate=True``. Raises
        :class:`TidingsClientError` when an ``error`` frame answers this send
        (``forbidden``: a rule of the kind was broken, ``not_found``: no such
        target; neither is worth a retry).
        """
        self._check_usable()
        body = message_content(
            content,
            reply_to=reply_to,
            mentions=mentions,
            mention_all=mention_all,
            forwarded=forwarded,
        )
        client_msg_id = self._protocol.send(conversation_id, body, client_msg_id)
        waiter: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._send_waiters.setdefault(client_msg_id, []).append(waiter)
        try:
            await self._flush()
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            self._protocol.forget_send(client_msg_id)
            raise RequestTimeoutError(f"no ack for {client_msg_id} within {timeout}s") from None
        finally:
            waiters = self._send_waiters.get(client_msg_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._send_waiters.pop(client_msg_id, None)

    async def edit(
        self,
        conversation_id: str,
        target: int,
        text: str,
        client_msg_id: str | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> Ack:
        """Replace the text of our own message at seq ``target`` (within the
        server's edit window, else ``forbidden``)."""
        content = edit_content(target, text)
        return await self.send(conversation_id, content, client_msg_id, timeout)

    async def delete(
        self,
        conversation_id: str,
        target: int,
        client_msg_id: str | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> Ack:
        """Delete the message at seq ``target`` for everyone (its author, a group
        admin or a moderator; else ``forbidden``)."""
        return await self.send(conversation_id, delete_content(target), client_msg_id, timeout)

    async def react(
        self,
        conversation_id: str,
        target: int,
        emoji: str,
        on: bool = True,
        client_msg_id: str | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> Ack:
        """Switch this user's ``emoji`` on the message at seq ``target`` on or off."""
        content = reaction_content(target, emoji, on)
        return await self.send(conversation_id, content, client_msg_id, timeout)

    async def sync(
        self,
        cursors: dict[str, int] | None = None,
        since: str | None = None,
        limit: int | None = None,
        timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    ) -> SyncResult:
        """Fetch what this client misses, following ``more`` until the server is done.

        ``cursors`` are the last seq held per conversation (others start from
        the server's delivered cursor for this device); ``since`` is the
        ``token`` of a previous result; ``limit`` caps each page. The returned
        messages are not repeated in ``events()``. Syncs are serialised.
        """
        self._check_usable()
        async with self._sync_lock:
            request_id = self._protocol.sync(cursors, since, limit)
            waiter: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
            self._sync_waiter = (request_id, waiter)
            try:
                await self._flush()
                async with asyncio.timeout(timeout):
                    return await waiter
            except TimeoutError:
                self._protocol.cancel_sync()
                await self._dispatch(self._protocol.events_received())
                raise RequestTimeoutError(f"sync not complete within {timeout}s") from None
            finally:
                self._sync_waiter = None

    async def ping(self, timeout: float = DEFAULT_REQUEST_TIMEOUT_S) -> float:
        """Send ``ping`` and wait for ``pong``; returns the round trip in seconds."""
        self._check_usable()
        started = time.monotonic()
        await self._request(self._protocol.ping(), timeout, "pong")
        return time.monotonic() - started

    async def reconcile(
        self, report: ReconcileRequest, timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    ) -> None:
        """Send a ``reconcile`` report and wait until the server has stored it."""
        self._check_usable()
        await self._request(self._protocol.reconcile(report), timeout, "answer to reconcile")

    async def _request(self, request_id: str, timeout: float, answer: str) -> None:
        """Flush a request already written and wait for the reply that settles its id."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._request_waiters[request_id] = waiter
        try:
            await self._flush()
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            self._protocol.forget_request(request_id)
            raise RequestTimeoutError(f"no {answer} within {timeout}s") from None
        finally:
            self._request_waiters.pop(request_id, None)

    async def delivered(self, conversation_id: str, seq: int) -> None:
        """Tell the server this device holds every message up to ``seq`` (cumulative)."""
        self._check_usable()
        self._protocol.delivered(conversation_id, seq)
        await self._flush()

    async def read(self, conversation_id: str, seq: int) -> None:
        """Tell the server the user has read up to ``seq`` (cumulative)."""
        self._check_usable()
        self._protocol.read(conversation_id, seq)
        await self._flush()

    async def typing(self, conversation_id: str, state: TypingState) -> None:
        """Send a typing state; refresh ``start`` every few seconds while typing."""
        self._check_usable()
        self._protocol.typing(conversation_id, state)
        await self._flush()

    async def start_typing(self, conversation_id: str) -> None:
        """Show this user as typing until :meth:`stop_typing`: sends ``start``
        now and again every ``TYPING_REFRESH_S`` (the server forgets a start
        after ``limits.typing_ttl_ms``, so a crashed app stops showing)."""
        await self.typing(conversation_id, "start")
        if conversation_id not in self._typing_timers:
            self._typing_timers[conversation_id] = asyncio.create_task(
                self._refresh_typing(conversation_id), name="tidings-typing"
            )

    async def stop_typing(self, conversation_id: str) -> None:
        """Stop the refresh timer and send ``stop``."""
        timer = self._typing_timers.pop(conversation_id, None)
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.typing(conversation_id, "stop")

    async def _refresh_typing(self, conversation_id: str) -> None:
        ttl_s = self.welcome.limits.typing_ttl_ms / 1000
        interval = min(TYPING_REFRESH_S, ttl_s * TYPING_REFRESH_FRACTION)
        while not self.closed:
            await asyncio.sleep(interval)
            try:
                await self.typing(conversation_id, "start")
            except TidingsClientError:
                return  # the connection is gone; the server's TTL clears it

    async def set_presence(self, status: OwnPresence) -> None:
        """Set the user's own presence (``online`` or ``away``)."""
        self._check_usable()
        self._protocol.presence(status)
        await self._flush()

    async def subscribe_presence(self, user_ids: list[str]) -> None:
        """Ask for these users' presence changes as :class:`Presence` events."""
        self._check_usable()
        self._protocol.presence_subscribe(user_ids)
        await self._flush()

    async def next_event(
        self,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> ClientEvent:
        """The next event; :class:`RequestTimeoutError` if none comes in time,
        :class:`ConnectionClosedError` once the connection is closed and drained."""
        if not self._events.empty():
            return self._events.get_nowait()
        if self._closed.is_set():
            raise self._closed_error()
        getter = asyncio.ensure_future(self._events.get())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            getter.cancel()
            closed.cancel()
        if getter in done:
            return getter.result()
        if closed in done:
            if not self._events.empty():
                return self._events.get_nowait()
            raise self._closed_error()
        raise RequestTimeoutError(f"no event within {timeout}s")

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Every event until the connection closes (the iterator then ends)."""
        while True:
            try:
                yield await self.next_event(timeout=None)
            except ConnectionClosedError:
                return

    # -- machinery -------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed.is_set():
            raise self._closed_error()

    def _closed_error(self) -> TidingsClientError:
        if self.close_code == CLOSE_UNAUTHORIZED:
            return TidingsClientError("unauthorized", self.close_reason or "unauthorized")
        return ConnectionClosedError(
            f"connection closed (code {self.close_code}) {self.close_reason}".strip(),
            close_code=self.close_code,
        )

    async def _flush(self) -> None:
        """Write every queued frame, in order, bounded by :data:`WRITE_TIMEOUT_S`."""
        async with self._write_lock:
            frames = self._protocol.data_to_send()
            if not frames:
                return
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    for frame in frames:
                        await self._ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
            except TimeoutError:
                logger.warning(
                    "tidings: write stalled for %ss; dropping connection", WRITE_TIMEOUT_S
                )
                await self._abort()
                raise ConnectionClosedError("write timed out") from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise ConnectionClosedError(f"write failed: {exc}") from exc

    async def _abort(self) -> None:
        """Drop a connection that stopped answering; bounded by :data:`CLOSE_TIMEOUT_S`.

        aiohttp has no public abort, so this is a close with a bounded wait, then
        the reader is cancelled (which fails every pending request).
        """
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        reader = self._reader
        if reader is not None and not reader.done() and reader is not asyncio.current_task():
            reader.cancel()

    async def _read_loop(self) -> None:
        """The only reader of the socket: frames -> protocol -> routed events."""
        try:
            while True:
                message = await self._ws.receive()
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._protocol.receive_data(message.data)
                    await self._dispatch(self._protocol.events_received())
                    await self._flush()  # sync paging queues the next page
                else:
                    # CLOSE, CLOSING, CLOSED or ERROR: the connection is over.
                    if message.type is aiohttp.WSMsgType.CLOSE:
                        self.close_reason = str(message.extra or "")
                    break
        except ConnectionClosedError:
            pass
        except Exception:
            logger.exception("tidings: reader failed; closing the connection")
        finally:
            self._connection_lost()

    def _connection_lost(self) -> None:
        if self._closed.is_set():
            return
        self.close_code = self._ws.close_code
        self._protocol.connection_lost(self.close_code, self.close_reason)
        for event in self._protocol.events_received():
            if not self._route_answer(event):
                self._enqueue_nowait(event)
        self._fail_all(self._closed_error())
        self._closed.set()

    def _fail_all(self, error: TidingsClientError) -> None:
        waiters: list[asyncio.Future[Ack] | asyncio.Future[None] | asyncio.Future[SyncResult]]
        waiters = [w for ws in self._send_waiters.values() for w in ws]
        waiters.extend(self._request_waiters.values())
        if self._sync_waiter is not None:
            waiters.append(self._sync_waiter[1])
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        if not self._welcome_waiter.done():
            self._welcome_waiter.set_exception(error)
        # The welcome waiter may never be awaited (e.g. closed after connect).
        if self._welcome_waiter.done() and not self._welcome_waiter.cancelled():
            self._welcome_waiter.exception()

    async def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if not self._route_answer(event) and not isinstance(event, Closed):
                await self._enqueue(event)

    def _route_answer(self, event: Event) -> bool:
        """Resolve the future an answer belongs to; ``False`` for application events."""
        if isinstance(event, Welcome):
            if not self._welcome_waiter.done():
                self._welcome_waiter.set_result(event)
            return True
        if isinstance(event, Ack):
            for waiter in self._send_waiters.get(event.client_msg_id, []):
                if not waiter.done():
                    waiter.set_result(event)
            return True
        if isinstance(event, Pong | Reconciled):
            answered = self._request_waiters.get(event.id or "")
            if answered is not None and not answered.done():
                answered.set_result(None)
            return True
        if isinstance(event, SyncComplete):
            pending = self._sync_waiter
            if pending is not None and pending[0] == event.request_id and not pending[1].done():
                pending[1].set_result(event.result)
            return True
        if isinstance(event, RequestFailed):
            self._fail_request(event.ref, error_from_frame(event.error))
            return True
        if isinstance(event, ServerError) and not self._welcome_waiter.done():
            # An error before welcome answers the hello (e.g. unauthorized).
            self._welcome_waiter.set_exception(error_from_frame(event))
            return True
        if isinstance(event, ProtocolViolation):
            logger.warning("tidings: protocol violation from server: %s", event.reason)
        # A sync_done the protocol did not claim is consumed here, never shown.
        return isinstance(event, SyncDone | Closed)

    def _fail_request(self, ref: str, error: TidingsClientError) -> None:
        futures: list[asyncio.Future[Ack] | asyncio.Future[None] | asyncio.Future[SyncResult]]
        futures = list(self._send_waiters.get(ref, []))
        request = self._request_waiters.get(ref)
        if request is not None:
            futures.append(request)
        if self._sync_waiter is not None and self._sync_waiter[0] == ref:
            futures.append(self._sync_waiter[1])
        for future in futures:
            if not future.done():
                future.set_exception(error)

    async def _enqueue(self, event: Event) -> None:
        if isinstance(event, _CLIENT_EVENT_TYPES):
            await self._events.put(event)

    def _enqueue_nowait(self, event: Event) -> None:
        """Queue an event while closing; when the queue is full it is dropped
        (only messages a failed sync collected can reach here, and the cursors
        let the next sync fetch them again)."""
        if isinstance(event, _CLIENT_EVENT_TYPES):
            try:
                self._events.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("tidings: event queue full while closing; dropped %r", event)

    async def _heartbeat_loop(self) -> None:
        """Ping every heartbeat_ms/2; drop the connection when a pong is missing."""
        heartbeat_s = self.welcome.heartbeat_ms / 1000
        interval = min(max(heartbeat_s / 2, MIN_HEARTBEAT_INTERVAL_S), MAX_HEARTBEAT_INTERVAL_S)
        # The server closes after 2 x heartbeat of silence; a pong later than
        # one heartbeat (at least one interval) means the link is not healthy.
        pong_timeout = max(heartbeat_s, interval)
        while not self._closed.is_set():
            await asyncio.sleep(interval)
            try:
                await self.ping(timeout=pong_timeout)
            except RequestTimeoutError:
                logger.warning("tidings: no pong within %.1fs; dropping connection", pong_timeout)
                await self._abort()
                return
            except TidingsClientError:
                return


_CLIENT_EVENT_TYPES = (
    Message,
    Receipt,
    ReceiptSummary,
    Typing,
    Presence,
    Reconnect,
    Notice,
    Hidden,
    ConversationState,
    ServerError,
    UnknownFrame,
    ProtocolViolation,
)


async def _open_socket(http: aiohttp.ClientSession, ws_url: str) -> aiohttp.ClientWebSocketResponse:
    """Open the WebSocket; a 503 (load shedding) becomes a retryable ``unavailable``."""
    try:
        return await http.ws_connect(ws_url, max_msg_size=MAX_INCOMING_FRAME_BYTES, autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        retry_after_ms: int | None = None
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        if retry_after is not None and retry_after.strip().isdigit():
            retry_after_ms = int(retry_after.strip()) * 1000
        if exc.status == 503:
            raise TidingsClientError(
                "unavailable",
                "the server is shedding load",
                retryable=True,
                retry_after_ms=retry_after_ms,
                status=503,
            ) from exc
        code = "unauthorized" if exc.status == 401 else "unavailable"
        raise TidingsClientError(
            code, f"WebSocket handshake failed: HTTP {exc.status}", status=exc.status
        ) from exc
    except aiohttp.ClientError as exc:
        raise ConnectionClosedError(f"cannot connect to {ws_url}: {exc}") from exc


class Connecting:
    """What :meth:`TidingsClient.connect` returns: await it for the client, or
    use it as ``async with`` to have the client closed at the end of the block."""

    def __init__(self, opening: Coroutine[Any, Any, TidingsClient]) -> None:
        self._opening = opening
        self._client: TidingsClient | None = None

    def __await__(self) -> Generator[Any, None, TidingsClient]:
        return self._opening.__await__()

    async def __aenter__(self) -> TidingsClient:
        self._client = await self._opening
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()
