"""One WebSocket connection: its lifecycle state machine and its send path.

Lifecycle (the only legal transitions; anything else is a bug and raises):

    AWAITING_HELLO --hello ok--> OPEN --close/timeout/error--> CLOSED
    AWAITING_HELLO --bad hello / timeout--> CLOSED

Sending never awaits. Frames are held until the end of the event loop's
turn, then go into the transport's buffer (see :class:`WriteHub`); when that
buffer holds more than ``send_buffer_bytes`` (the client is not reading fast
enough) the connection is cut as a slow consumer, so a stuck client costs a
bounded amount of memory (FM3) and never slows the sender's path. It will
recover what it missed by ``sync`` on its next connect.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

from tidings.core.append_order import AppendOrder
from tidings.core.loop import LoopRef
from tidings.core.models import Device
from tidings.core.ratelimit import TokenBucket
from tidings.gateway.wsframe import text_frame

log = logging.getLogger("tidings.gateway")


class State(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    CLOSED = "closed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.AWAITING_HELLO: frozenset({State.OPEN, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (4000-4999 are application codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    UNAUTHORIZED = 4001
    SLOW_CONSUMER = 4002
    HEARTBEAT_TIMEOUT = 4003
    HELLO_TIMEOUT = 4004


# After cutting a slow consumer, give the close frame this long to drain
# before the socket is aborted outright.
SLOW_CONSUMER_ABORT_S = 2.0


class WriteHub:
    """Per-node write policy shared by every connection: the send buffer
    limit, what to do with a cut connection, and write coalescing.

    Frames written during one turn of the event loop are held per connection
    and flushed together at the end of the turn: under load, the acks and
    messages a busy connection gets in one turn leave in one ``send()`` system
    call instead of one each (system calls dominated the gateway's profile).
    A frame waits at most until the loop's next turn.
    """

    def __init__(self, send_buffer_bytes: int, on_cut: Callable[[Connection], None]) -> None:
        self.send_buffer_bytes = send_buffer_bytes
        self.on_cut = on_cut
        self._dirty: list[Connection] = []
        self._loop = LoopRef()

    def mark(self, conn: Connection) -> None:
        if not self._dirty:
            self._loop.get().call_soon(self.flush)
        self._dirty.append(conn)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class Unacked:
    """Live messages of one conversation written to a connection and not yet
    covered by its ``delivered``: seqs ``low..high``, last written at ``sent_at``."""

    __slots__ = ("attempts", "high", "low", "sent_at")

    def __init__(self, seq: int, now: float) -> None:
        self.low = seq
        self.high = seq
        self.sent_at = now
        self.attempts = 0


class Connection:
    __slots__ = (
        "_hub",
        "_order",
        "_pending",
        "_transport",
        "device",
        "ended",
        "frame_bucket",
        "in_flight",
        "last_recv",
        "network",
        "session_id",
        "state",
        "unacked",
    )

    def __init__(
        self,
        session_id: str,
        transport: asyncio.Transport,
        hub: WriteHub,
        frame_bucket: TokenBucket,
        now: float,
    ) -> None:
        self.session_id = session_id
        self._transport = transport
        self._hub = hub
        self._pending: list[bytes] | None = None
        self.frame_bucket = frame_bucket
        self.last_recv = now
        self.state = State.AWAITING_HELLO
        self.device: Device | None = None
        self.network = "unknown"
        # Why the session ended (a label of tidings_connection_drops_total),
        # set by whoever ended it first.
        self.ended: str | None = None
        # Created on the first live message, dropped when all are acknowledged:
        # an idle connection that keeps up costs nothing here.
        self.unacked: dict[str, Unacked] | None = None
        # The sends and cursor moves being answered (gateway/session.py):
        # None whenever there are none, like ``unacked``.
        self.in_flight: set[asyncio.Task[None]] | None = None
        self._order: AppendOrder | None = None

    def append_order(self) -> AppendOrder:
        """The order this connection's sends reach the store in (made on the first send)."""
        if self._order is None:
            self._order = AppendOrder()
        return self._order

    @property
    def user_id(self) -> str:
        assert self.device is not None
        return self.device.user_id

    def transition(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal transition {self.state.value} -> {new.value}")
        self.state = new

    def write_frame(self, frame: bytes) -> bool:
        """Queue an already framed WebSocket frame; False if the connection is gone."""
        if self.state is State.CLOSED or self._transport.is_closing():
            return False
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            self._hub.mark(self)
        else:
            pending.append(frame)
        return True

    def track(self, conversation_id: str, seq: int, now: float) -> None:
        """Remember a live message written here, for redelivery until acknowledged."""
        unacked = self.unacked
        if unacked is None:
            self.unacked = {conversation_id: Unacked(seq, now)}
            return
        entry = unacked.get(conversation_id)
        if entry is None:
            unacked[conversation_id] = Unacked(seq, now)
        elif seq > entry.high:
            entry.high = seq
            entry.sent_at = now

    def acknowledged(self, conversation_id: str, seq: int) -> None:
        """The client holds everything up to ``seq`` (a cumulative ``delivered``)."""
        unacked = self.unacked
        if unacked is None:
            return
        entry = unacked.get(conversation_id)
        if entry is None:
            return
        if seq >= entry.high:
            del unacked[conversation_id]
            if not unacked:
                self.unacked = None
        elif seq >= entry.low:
            entry.low = seq + 1

    def write(self, payload: bytes) -> bool:
        """Frame and queue one JSON payload."""
        return self.write_frame(text_frame(payload))

    def flush(self) -> None:
        """Hand the frames held for this turn to the transport (one system call)."""
        pending, self._pending = self._pending, None
        transport = self._transport
        if not pending or transport.is_closing():
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if transport.get_write_buffer_size() > self._hub.send_buffer_bytes:
            self.cut_slow_consumer()

    def cut_slow_consumer(self) -> None:
        log.warning(
            "slow consumer cut",
            extra={
                "session_id": self.session_id,
                "buffered": self._transport.get_write_buffer_size(),
            },
        )
        close = bytes((0x88, 2)) + int(CloseCode.SLOW_CONSUMER).to_bytes(2, "big")
        self._transport.write(close)
        self._transport.close()
        asyncio.get_running_loop().call_later(SLOW_CONSUMER_ABORT_S, self._transport.abort)
        self._hub.on_cut(self)
