"""The sans-I/O core of the Tidings client: frames in, events out.

:class:`ClientProtocol` knows the whole wire protocol and does no I/O (nothing
here imports ``asyncio``). Calls such as :meth:`ClientProtocol.send` queue
frame bytes that the transport collects with :meth:`~ClientProtocol.data_to_send`;
the transport feeds every received text frame to
:meth:`~ClientProtocol.receive_data` and collects typed events with
:meth:`~ClientProtocol.events_received`. The asyncio adapter
(:mod:`tidings_client.connection`) is then a few lines per callback, and the
logic is tested by feeding bytes, without sockets or an event loop.

What the core decides, so that every transport agrees:

- **Lifecycle**: the :data:`TRANSITIONS` table below is the only place that
  changes :attr:`ClientProtocol.state`; calls that do not fit the state raise
  :class:`InvalidStateError`.
- **Deduplication**: ``msg`` frames are checked against :class:`Cursors` by
  (conversation_id, seq); a seq already held produces no event.
- **Request matching**: ``ack`` by client_msg_id, ``pong`` and ``sync_done`` by
  request id, ``error`` by ``ref``. An ``error`` answering a pending request
  becomes :class:`RequestFailed`; any other is a :class:`ServerError` event.
- **Sync paging**: a sync is one operation however many pages it takes. On
  ``sync_done`` with ``more`` the core itself queues the next ``sync`` (with the
  page's ``token`` as ``since`` and the cursors reached so far) and emits one
  :class:`SyncComplete` at the end. Every ``msg`` that arrives while a sync is
  in flight goes into its :class:`SyncResult` and not into the event stream,
  so each message is surfaced exactly once: live in the events, or in a sync
  result. If the sync fails or the connection drops, the messages it had
  collected are emitted as ordinary events so that none is lost.
- **Server input never raises**: an unknown frame type is an
  :class:`UnknownFrame` event and a malformed or out-of-place frame is a
  :class:`ProtocolViolation` event; only misuse of the API raises.
"""

from __future__ import annotations

import enum
import itertools
import uuid

import msgspec

from tidings_client.cursors import Cursors
from tidings_client.errors import InvalidStateError, TidingsClientError
from tidings_client.frames import (
    SERVER_FRAME_TYPES,
    Ack,
    ClientFrame,
    ClientInfo,
    Content,
    ConversationSyncState,
    DeliveredRequest,
    Hello,
    Message,
    Network,
    Notice,
    OwnPresence,
    PingRequest,
    Pong,
    PresenceRequest,
    PresenceSubscribeRequest,
    ReadRequest,
    Reconciled,
    ReconcileRequest,
    SendRequest,
    ServerError,
    ServerFrame,
    SyncDone,
    SyncRequest,
    TypingRequest,
    TypingState,
    Welcome,
)

# -- lifecycle ----------------------------------------------------------------


class State(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"  # transport open, hello not yet sent
    AUTHENTICATING = "authenticating"  # hello sent, waiting for welcome
    OPEN = "open"  # welcome received: every call is allowed
    CLOSING = "closing"  # the client asked to close; answers may still arrive
    CLOSED = "closed"  # the transport is gone


class Trigger(enum.Enum):
    """What moves the state machine."""

    SEND_HELLO = "send hello"
    RECEIVE_WELCOME = "receive welcome"
    CLOSE = "close"
    CONNECTION_LOST = "connection lost"


# Rule: everything that changes State lives in this table. A pair that is not
# here is an illegal transition.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.CONNECTING, Trigger.SEND_HELLO): State.AUTHENTICATING,
    (State.AUTHENTICATING, Trigger.RECEIVE_WELCOME): State.OPEN,
    (State.CONNECTING, Trigger.CLOSE): State.CLOSING,
    (State.AUTHENTICATING, Trigger.CLOSE): State.CLOSING,
    (State.OPEN, Trigger.CLOSE): State.CLOSING,
    (State.CLOSING, Trigger.CLOSE): State.CLOSING,
    (State.CONNECTING, Trigger.CONNECTION_LOST): State.CLOSED,
    (State.AUTHENTICATING, Trigger.CONNECTION_LOST): State.CLOSED,
    (State.OPEN, Trigger.CONNECTION_LOST): State.CLOSED,
    (State.CLOSING, Trigger.CONNECTION_LOST): State.CLOSED,
    (State.CLOSED, Trigger.CLOSE): State.CLOSED,
}


def state_diagram() -> str:
    """The lifecycle as a Mermaid state diagram, generated from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.CONNECTING.name}"]
    for (source, trigger), target in TRANSITIONS.items():
        lines.append(f"    {source.name} --> {target.name}: {trigger.value}")
    lines.append(f"    {State.CLOSED.name} --> [*]")
    return "\n".join(lines)


# -- events synthesised by the core (the others are the frames themselves) -------


class SyncResult(msgspec.Struct, frozen=True):
    """The whole answer to one sync, all pages together.

    ``conversations`` are the server's cursors of every conversation that
    changed (a later page's entry replaces an earlier one); ``messages`` are the
    messages the client did not hold yet, in seq order within each conversation
    (conversations in the order they first appeared). ``pages`` counts the
    ``sync_done`` frames it took.
    """

    token: str
    conversations: list[ConversationSyncState]
    messages: list[Message]
    pages: int = 1


class SyncComplete(msgspec.Struct, frozen=True):
    """A sync operation finished; ``request_id`` is the id :meth:`ClientProtocol.sync` returned."""

    request_id: str
    result: SyncResult


class RequestFailed(msgspec.Struct, frozen=True):
    """An ``error`` frame answered a pending request.

    ``ref`` is the client_msg_id for a send, else the id returned by the call.
    """

    ref: str
    error: ServerError


class UnknownFrame(msgspec.Struct, frozen=True):
    """A frame of a type this SDK does not know (a newer server); safe to ignore."""

    type: str
    data: dict[str, object]


class ProtocolViolation(msgspec.Struct, frozen=True):
    """A frame that breaks the protocol (bad JSON, wrong fields, out of place)."""

    reason: str
    data: bytes


class Closed(msgspec.Struct, frozen=True):
    """The transport is gone; every pending request has failed."""

    code: int | None
    reason: str


Event = ServerFrame | SyncComplete | RequestFailed | UnknownFrame | ProtocolViolation | Closed


# -- the protocol --------------------------------------------------------------

# Default name/version a client announces in hello.
DEFAULT_CLIENT_NAME = "tidings-py"
CLIENT_VERSION = "0.1.0"

_server_frame_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
_generic_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class _SyncOperation:
    """The state of one (possibly multi-page) sync."""

    __slots__ = (
        "conversations",
        "cursors",
        "limit",
        "messages",
        "page_id",
        "pages",
        "request_id",
    )

    def __init__(self, request_id: str, cursors: dict[str, int], limit: int | None) -> None:
        self.request_id = request_id
        self.page_id = request_id
        # Cursors sent with the next page: the explicit ones, then updated
        # for every conversation this sync delivered messages in.
        self.cursors = cursors
        self.limit = limit
        self.messages: list[Message] = []
        self.conversations: dict[str, ConversationSyncState] = {}
        self.pages = 0

    def result(self, token: str) -> SyncResult:
        order: dict[str, int] = {}
        for message in self.messages:
            order.setdefault(message.conversation_id, len(order))
        messages = sorted(self.messages, key=lambda m: (order[m.conversation_id], m.seq))
        return SyncResult(token, list(self.conversations.values()), messages, self.pages)


class ClientProtocol:
    """The client side of one Tidings WebSocket connection, without I/O.

    ``cursors`` may be shared with a previous connection's protocol so that
    deduplication and resumption survive a reconnect.
    """

    def __init__(self, cursors: Cursors | None = None) -> None:
        self.cursors = cursors if cursors is not None else Cursors()
        self.state = State.CONNECTING
        self.welcome: Welcome | None = None
        self.notice: Notice | None = None
        """The last ``notice`` of this connection (sent right after ``welcome``)."""
        self._ids = itertools.count(1)
        self._outgoing: list[bytes] = []
        self._events: list[Event] = []
        # client_msg_id -> conversation_id of every send without ack or error yet.
        self._pending_sends: dict[str, str] = {}
        # Request ids of pings and reconciles without an answer yet.
        self._pending_requests: set[str] = set()
        self._sync: _SyncOperation | None = None
        # Page ids of syncs the caller gave up on; their late sync_done is ignored.
        self._abandoned_sync_pages: set[str] = set()
        self.duplicates_dropped = 0

    # -- plumbing -------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Frames to write, each one WebSocket text frame (UTF-8 JSON); clears the queue."""
        data, self._outgoing = self._outgoing, []
        return data

    def events_received(self) -> list[Event]:
        """Events produced since the last call; clears the queue."""
        events, self._events = self._events, []
        return events

    @property
    def pending_sends(self) -> dict[str, str]:
        """client_msg_id -> conversation_id of sends still waiting for ack or error."""
        return dict(self._pending_sends)

    @property
    def sync_in_progress(self) -> bool:
        return self._sync is not None

    def _transition(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise InvalidStateError(f"cannot {trigger.value} in state {self.state.value}")
        self.state = target

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _write(self, frame: ClientFrame) -> None:
        self._outgoing.append(_encoder.encode(frame))

    def _require_open(self, what: str) -> None:
        if self.state is not State.OPEN:
            raise InvalidStateError(f"cannot {what} in state {self.state.value}")

    # -- outgoing calls ----------------------------------------------------------

    def hello(
        self,
        token: str,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        client_version: str = CLIENT_VERSION,
        network: Network = "unknown",
        epoch: str | None = None,
    ) -> None:
        """Queue the ``hello`` frame; it must be the first frame of a connection."""
        if network not in ("wifi", "cellular", "ethernet", "unknown"):
            raise ValueError(f"network must be wifi, cellular, ethernet or unknown: {network!r}")
        self._transition(Trigger.SEND_HELLO)
        info = ClientInfo(client_name, client_version, network)
        self._write(Hello(token=token, client=info, epoch=epoch))

    def send(
        self, conversation_id: str, content: Content | str, client_msg_id: str | None = None
    ) -> str:
        """Queue a ``send``; returns its client_msg_id (generated when not given).

        A str is sent as ``{"text": str}``. Sending a client_msg_id that is still
        pending is a retry: the frame goes out again and one answer settles both.
        Content over ``welcome.limits.max_content_bytes`` is refused here, before
        it costs a round trip.
        """
        self._require_open("send")
        assert self.welcome is not None
        body: Content = {"text": content} if isinstance(content, str) else content
        size = len(_encoder.encode(body))
        limit = self.welcome.limits.max_content_bytes
        if size > limit:
            raise TidingsClientError(
                "too_large", f"content is {size} bytes; the limit is {limit}", retryable=False
            )
        if client_msg_id is None:
            client_msg_id = str(uuid.uuid4())
        self._pending_sends[client_msg_id] = conversation_id
        self._write(SendRequest(conversation_id, client_msg_id, body))
        return client_msg_id

    def sync(
        self,
        cursors: dict[str, int] | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> str:
        """Start a sync; returns the request id that its :class:`SyncComplete` carries.

        Explicit ``cursors`` declare what the client holds (they are recorded in
        :attr:`cursors`); without them the server starts from this device's
        delivered cursor. One sync at a time: the answers are not otherwise
        attributable to a request.
        """
        self._require_open("sync")
        if self._sync is not None:
            raise InvalidStateError("a sync is already in progress")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        explicit = dict(cursors or {})
        for conversation_id, seq in explicit.items():
            self.cursors.set(conversation_id, seq)
        request_id = self._next_id("sync-")
        self._sync = _SyncOperation(request_id, explicit, limit)
        self._write(SyncRequest(request_id, since, explicit or None, limit))
        return request_id

    def delivered(self, conversation_id: str, seq: int) -> None:
        """Queue ``delivered``: this device holds every message up to ``seq``."""
        self._require_open("send delivered")
        self._write(DeliveredRequest(conversation_id, _check_seq(seq)))

    def read(self, conversation_id: str, seq: int) -> None:
        """Queue ``read``: the user has read up to ``seq``."""
        self._require_open("send read")
        self._write(ReadRequest(conversation_id, _check_seq(seq)))

    def typing(self, conversation_id: str, state: TypingState) -> None:
        """Queue ``typing``; refresh ``start`` every few seconds while typing."""
        self._require_open("send typing")
        if state not in ("start", "stop"):
            raise ValueError(f"state must be start or stop: {state!r}")
        self._write(TypingRequest(conversation_id, state))

    def presence(self, status: OwnPresence) -> None:
        """Queue the user's own presence status."""
        self._require_open("send presence")
        if status not in ("online", "away"):
            raise ValueError(f"status must be online or away: {status!r}")
        self._write(PresenceRequest(status))

    def presence_subscribe(self, user_ids: list[str]) -> None:
        """Queue a subscription to these users' presence."""
        self._require_open("subscribe to presence")
        self._write(PresenceSubscribeRequest(list(user_ids)))

    def ping(self) -> str:
        """Queue a ``ping``; returns the id its :class:`Pong` carries.

        Allowed while authenticating too, since any frame keeps the connection alive.
        """
        if self.state not in (State.AUTHENTICATING, State.OPEN):
            raise InvalidStateError(f"cannot ping in state {self.state.value}")
        request_id = self._next_id("ping-")
        self._pending_requests.add(request_id)
        self._write(PingRequest(request_id))
        return request_id

    def reconcile(self, report: ReconcileRequest) -> str:
        """Queue a ``reconcile`` report; returns the id its :class:`Reconciled` carries."""
        self._require_open("send reconcile")
        request_id = self._next_id("reconcile-")
        self._pending_requests.add(request_id)
        self._write(ReconcileRequest(report.epoch, report.conversations, request_id))
        return request_id

    def cancel_sync(self) -> None:
        """Give up on the pending sync (the caller timed out).

        What it collected is emitted as ordinary events and later messages are
        live events again; its late ``sync_done`` is ignored. The cursors are
        unaffected, so the next sync resumes from what was received.
        """
        if self._sync is not None:
            self._abandoned_sync_pages.add(self._sync.page_id)
            self._abandon_sync()

    def forget_send(self, client_msg_id: str) -> None:
        """Stop matching answers to this send (the caller timed out).

        A late ``ack`` is still emitted; a late ``error`` becomes a :class:`ServerError`.
        """
        self._pending_sends.pop(client_msg_id, None)

    def forget_request(self, request_id: str) -> None:
        """Stop matching answers to this ping or reconcile (the caller timed out)."""
        self._pending_requests.discard(request_id)

    def close(self) -> None:
        """The client is closing; frames that still arrive are processed."""
        self._transition(Trigger.CLOSE)

    def connection_lost(self, code: int | None = None, reason: str = "") -> None:
        """The transport is gone: fail everything pending and emit :class:`Closed`."""
        if self.state is State.CLOSED:
            return
        self._transition(Trigger.CONNECTION_LOST)
        self._abandon_sync()
        self._pending_sends.clear()
        self._pending_requests.clear()
        self._events.append(Closed(code, reason))

    # -- incoming data ------------------------------------------------------------

    def receive_data(self, data: bytes | str) -> None:
        """Process one received text frame; the results are in :meth:`events_received`."""
        if self.state is State.CLOSED:
            raise InvalidStateError("cannot receive data after the connection was lost")
        try:
            frame = _server_frame_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._events.append(_diagnose(data, exc))
            return
        self._handle(frame, data)

    def _handle(self, frame: ServerFrame, data: bytes | str) -> None:
        if isinstance(frame, Message):
            self._on_message(frame)
        elif isinstance(frame, Ack):
            self._pending_sends.pop(frame.client_msg_id, None)
            self._events.append(frame)
        elif isinstance(frame, Pong | Reconciled):
            if frame.id is not None:
                self._pending_requests.discard(frame.id)
            self._events.append(frame)
        elif isinstance(frame, Notice):
            self.notice = frame
            self._events.append(frame)
        elif isinstance(frame, SyncDone):
            self._on_sync_done(frame)
        elif isinstance(frame, ServerError):
            self._on_error(frame)
        elif isinstance(frame, Welcome):
            if self.state is not State.AUTHENTICATING:
                self._events.append(
                    ProtocolViolation(f"welcome in state {self.state.value}", _as_bytes(data))
                )
                return
            self._transition(Trigger.RECEIVE_WELCOME)
            self.welcome = frame
            self._events.append(frame)
        else:
            self._events.append(frame)

    def _on_message(self, message: Message) -> None:
        if not self.cursors.observe(message.conversation_id, message.seq):
            self.duplicates_dropped += 1
            return
        if self._sync is not None:
            self._sync.messages.append(message)
        else:
            self._events.append(message)

    def _on_sync_done(self, done: SyncDone) -> None:
        if done.id is not None and done.id in self._abandoned_sync_pages:
            self._abandoned_sync_pages.discard(done.id)
            return
        operation = self._sync
        # A sync_done without id is taken as the answer to the pending sync.
        if operation is None or (done.id is not None and done.id != operation.page_id):
            self._events.append(
                ProtocolViolation(f"sync_done for unknown request {done.id!r}", b"")
            )
            return
        operation.pages += 1
        for state in done.conversations:
            operation.conversations[state.conversation_id] = state
        if not done.more:
            self._sync = None
            self._events.append(SyncComplete(operation.request_id, operation.result(done.token)))
            return
        for message in operation.messages:
            cid = message.conversation_id
            operation.cursors[cid] = self.cursors.cursor(cid)
        operation.page_id = self._next_id("sync-")
        self._write(
            SyncRequest(operation.page_id, done.token, operation.cursors or None, operation.limit)
        )

    def _on_error(self, error: ServerError) -> None:
        ref = error.ref
        if ref is not None and ref in self._pending_sends:
            del self._pending_sends[ref]
            self._events.append(RequestFailed(ref, error))
        elif ref is not None and ref in self._pending_requests:
            self._pending_requests.discard(ref)
            self._events.append(RequestFailed(ref, error))
        elif ref is not None and self._sync is not None and ref == self._sync.page_id:
            request_id = self._sync.request_id
            self._abandon_sync()
            self._events.append(RequestFailed(request_id, error))
        elif ref is not None and ref in self._abandoned_sync_pages:
            self._abandoned_sync_pages.discard(ref)
        else:
            self._events.append(error)

    def _abandon_sync(self) -> None:
        """Drop the pending sync, surfacing what it collected as ordinary events."""
        if self._sync is not None:
            self._events.extend(self._sync.messages)
            self._sync = None


def _check_seq(seq: int) -> int:
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    return seq


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _diagnose(data: bytes | str, exc: Exception) -> UnknownFrame | ProtocolViolation:
    """Tell an unknown frame type (fine) from a broken frame (a server bug)."""
    raw = _as_bytes(data)
    try:
        obj = _generic_decoder.decode(raw)
    except msgspec.DecodeError:
        return ProtocolViolation("frame is not valid JSON", raw)
    if not isinstance(obj, dict):
        return ProtocolViolation("frame is not a JSON object", raw)
    kind = obj.get("type")
    if not isinstance(kind, str):
        return ProtocolViolation("frame has no string field 'type'", raw)
    if kind not in SERVER_FRAME_TYPES:
        return UnknownFrame(kind, {str(key): value for key, value in obj.items()})
    return ProtocolViolation(f"invalid {kind} frame: {exc}", raw)
