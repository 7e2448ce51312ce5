"""The sans-I/O core of the resilient client: outbox, cursors, gaps, epochs, backoff.

:class:`ResilientCore` decides everything :class:`~tidings_client.resilient.ResilientClient`
does and does none of it itself: it opens no socket, reads no clock and starts
no task. The driver feeds it what happened (``connected``, ``message_received``,
``ack_received``, ``sync_completed``, ``disconnected``, ``tick``, each with
``now``, a monotonic time in seconds) and carries out the :data:`Command` s it
returns from :meth:`ResilientCore.take_commands`; the app gets
:data:`ResilientEvent` s from :meth:`ResilientCore.take_events`. Its only side
effects are on the two SQLite stores it is given (``":memory:"`` in tests), so
every rule below is tested by calling methods, without sockets or sleeps.

The rules, and why:

**Outbox** (:class:`~tidings_client.outbox.Outbox`). A send is committed to the
outbox before its first transmission and removed only by its ``ack`` (or by
its own ``msg`` coming back through a sync, which proves it was stored), or
by the app. An entry in flight without ack after ``ack_timeout`` or on a
dropped connection counts one attempt and is sent again with the same
client_msg_id; the server's deduplication makes that safe. After
``max_attempts`` it becomes *failed-and-kept* (:class:`SendFailed` with
``retryable=True``); the app calls :meth:`ResilientCore.retry` or
:meth:`ResilientCore.discard`. ``rate_limited`` / ``unavailable`` answers
resend after ``retry_after_ms`` without using an attempt, up to
``max_deferrals``. Other errors (``not_member``, ``too_large``,
``bad_frame``, and ``forbidden`` / ``not_found`` for an edit, delete or
reaction the server refused) are final: never sent again, reported with
``retryable=False`` and kept until discarded. A new core on the same outbox
file sends every pending entry once connected: that is the restart flush.

**Reconnect.** After a drop the next attempt waits one
:class:`~tidings_client.backoff.Backoff` interval (the first one too: a server
restart drops every client at once, and an immediate reconnect would be a
thundering herd). A ``reconnect`` frame's ``after_ms`` and an HTTP 503's
``Retry-After`` replace the interval and do not move the schedule on: the
server is up, and it has randomised the delay over its own backlog already.
The schedule resets once a connection has stayed up ``stable_after``
seconds, so a flapping link keeps backing off.

**Receive side.** Every message (live, redelivered, from a sync, or our own
from its ``ack``) goes through one path: dropped if its (conversation, seq)
is held already; surfaced if it is ``cursor + 1``, then any held successors;
otherwise *held* in memory and a ``sync`` from the cursors is requested. So
the app sees each conversation in seq order without holes, and the store's
cursor always means "every message up to here is stored". A conversation the
store has never seen gets its starting point from the sync answer (the
server's delivered cursor for this device, which is where the server starts
it), or just below our own first message acked there if that is lower: the
server moves this device's cursor past our own messages as it stores them,
so a first sync would skip those sent before it (seen in the chaos test: a
client that sent before its first sync completed, and whose connection then
dropped, never held its first few messages). While a send of ours there
still awaits its ack, a cursor above 0 is not taken at all (that send's seq
may lie below it); the ack brings the seq and another sync. Cumulative
``delivered`` goes out per conversation after ``delivered_batch`` messages or
``delivered_delay`` seconds, whichever first, and only after the messages
are committed to the store.

**Retention.** A sync answer's ``history_start`` is the first seq the server
still shows this user in a conversation. When it lies above ``cursor + 1``
the seqs in between will never come (purged, or before a ``joined``-history
member joined), so the cursor moves to ``history_start - 1`` and one
:class:`HistoryGap` tells the app; the epoch check compares only from there.

**Epochs.** The store keeps the last ``welcome.epoch``. A different one means
the server was restored from a backup, so seqs above the backup point may now
name other messages. The core re-fetches each conversation from
``cursor - epoch_verify_window`` (from 0 if the divergence lies deeper),
finds the first seq whose message_id differs from the stored one or that the
server no longer has, moves the stored messages from there up to the
unconfirmed list, puts this user's own among them back into the outbox under
their original client_msg_id, and emits :class:`EpochChanged` with the lost
ranges. Other people's lost messages are kept, listed by
:meth:`~tidings_client.store.MessageStore.not_on_server` (never resent: only
their sender's device can vouch for them). Messages that arrive meanwhile are
held back and replayed afterwards. The new epoch is stored last, so a crash
in between redoes the check.

**Reconcile.** With the new epoch the store keeps a ``reconcile`` report
(per conversation with a lost range: the server's ``last_seq``, our cursor
before the restore, how many lost messages were ours and others'), in the
same transaction, so it exists exactly when the epoch does. It is sent
(:class:`SendReconcile`) once the check is over and on every connection
while the server has not stored it; the server's answer, or a refusal that
cannot change (``not_member``...), clears it, so each device reports each
epoch once across restarts and drops. Operators read the reports with
``tidings restore report``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tidings_client.backoff import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    DEFAULT_FACTOR,
    Backoff,
    Jitter,
)
from tidings_client.frames import (
    Ack,
    Content,
    ConversationSyncState,
    Message,
    ReconcileConversation,
    ReconcileRequest,
    Welcome,
)
from tidings_client.outbox import Outbox, OutboxEntry, OutboxStatus
from tidings_client.protocol import SyncResult
from tidings_client.store import MessageStore

# -- defaults, each with its reason ---------------------------------------------------

# A healthy server acks in milliseconds; 3 s without an
# ack on a live connection means the frame or its ack was lost.
DEFAULT_ACK_TIMEOUT_S = 3.0
# The first send plus up to 3 retries; then the app is told.
DEFAULT_MAX_ATTEMPTS = 4
# rate_limited/unavailable are the server pacing us, not failures; the bound
# only stops an endless loop against a server that never recovers.
DEFAULT_MAX_DEFERRALS = 100
# Sends in flight at once: enough to flush a few hundred queued messages in a
# few round trips, few enough not to trip the per-user send rate at once.
DEFAULT_MAX_IN_FLIGHT = 32
# A connection that stayed up this long proves the path works: back off from
# the start again next time (the backoff resets after a stable connection).
DEFAULT_STABLE_AFTER_S = 30.0
# Cumulative delivered acks: one frame per 50 messages or per half second
# keeps the server's redelivery timer (seconds) far away while costing
# little upstream traffic during a burst.
DEFAULT_DELIVERED_BATCH = 50
DEFAULT_DELIVERED_DELAY_S = 0.5
# A restore usually loses minutes of traffic; 500 messages per conversation
# covers that in one round trip, and a deeper divergence triggers a full pass.
DEFAULT_EPOCH_VERIFY_WINDOW = 500
# The server's bound on one reconcile report (docs/protocol.md); a device
# with more conversations to report sends those with the most lost messages.
MAX_RECONCILE_CONVERSATIONS = 1000
# A sync that failed (timeout, error) is tried again after this long, so a
# struggling server is not hit in a tight loop.
SYNC_RETRY_DELAY_S = 1.0
# Syncs in a row that surfaced nothing while gaps remain before the held
# messages are dropped (the server cannot fill them; see sync_completed).
MAX_STALLED_SYNCS = 3
# The shortest wait a 503's Retry-After can set before the next connect
# attempt (Tidings itself never says less than 1 s).
MIN_SERVER_RETRY_S = 1.0
# When rate_limited/unavailable come without retry_after_ms.
DEFAULT_RETRY_AFTER_S = 1.0
# Server error codes that mean "send the same frame again later" (docs/protocol.md).
DEFERRAL_CODES = frozenset({"rate_limited", "unavailable", "internal"})
# Code reported when the attempts ran out.
ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class ResilienceConfig:
    """Tunables of :class:`ResilientCore`; each default's reason is at its constant above."""

    ack_timeout: float = DEFAULT_ACK_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_deferrals: int = DEFAULT_MAX_DEFERRALS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    backoff_base: float = DEFAULT_BASE_S
    backoff_factor: float = DEFAULT_FACTOR
    backoff_cap: float = DEFAULT_CAP_S
    backoff_jitter: Jitter = "equal"
    stable_after: float = DEFAULT_STABLE_AFTER_S
    delivered_batch: int = DEFAULT_DELIVERED_BATCH
    delivered_delay: float = DEFAULT_DELIVERED_DELAY_S
    epoch_verify_window: int = DEFAULT_EPOCH_VERIFY_WINDOW

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_in_flight < 1 or self.delivered_batch < 1:
            raise ValueError("max_attempts, max_in_flight and delivered_batch must be >= 1")
        if self.ack_timeout <= 0:
            raise ValueError("ack_timeout must be > 0")


# -- commands (core -> driver) ---------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """Open a connection; report ``connected`` or ``connect_failed``.

    ``epoch`` is the last one stored, for ``hello``.
    """

    epoch: str | None


@dataclass(frozen=True)
class Disconnect:
    """Close the current connection (the server asked us to reconnect)."""

    reason: str


@dataclass(frozen=True)
class Transmit:
    """Write a ``send`` frame; report ``ack_received`` or ``send_error``."""

    client_msg_id: str
    conversation_id: str
    content: Content


@dataclass(frozen=True)
class RequestSync:
    """Run a ``sync`` with these cursors; report ``sync_completed`` or ``sync_failed``."""

    cursors: dict[str, int]


@dataclass(frozen=True)
class SendDelivered:
    """Write a cumulative ``delivered``."""

    conversation_id: str
    seq: int


@dataclass(frozen=True)
class SendReconcile:
    """Write ``reconcile``; report ``reconcile_sent`` or ``reconcile_failed``."""

    report: ReconcileRequest


Command = Connect | Disconnect | Transmit | RequestSync | SendDelivered | SendReconcile


# -- events (core -> app) --------------------------------------------------------------


@dataclass(frozen=True)
class MessageSent:
    """An outbox entry is acknowledged (durable on the server) and left the outbox."""

    client_msg_id: str
    conversation_id: str
    seq: int
    message_id: str
    duplicate: bool
    failed_attempts: int = 0
    """Transmissions before the acknowledged one that got no ack (0: first try)."""


@dataclass(frozen=True)
class SendFailed:
    """An outbox entry stopped being sent; it is *kept* until retried or discarded.

    ``retryable`` is ``True`` when the attempts ran out (``code`` is
    ``attempts_exhausted`` or the last deferral code): :meth:`ResilientCore.retry`
    may well succeed later. ``False`` when the server refused the message
    (``not_member``, ``too_large``, ...): resending the same content will not help.
    """

    client_msg_id: str
    conversation_id: str
    code: str
    message: str
    retryable: bool
    attempts: int


@dataclass(frozen=True)
class LostRange:
    """Seqs ``first_seq..last_seq`` of a conversation that the store held but the
    restored server does not (as they were numbered before the restore).

    ``resent`` are this user's own messages from that range (client_msg_ids),
    back in the outbox under their original client_msg_id; ``not_on_server``
    are the others' (message_ids), kept and listed by
    :meth:`~tidings_client.store.MessageStore.not_on_server` until their
    senders resend them.
    """

    conversation_id: str
    first_seq: int
    last_seq: int
    resent: tuple[str, ...]
    not_on_server: tuple[str, ...] = ()


@dataclass(frozen=True)
class EpochChanged:
    """The server's history was restored from a backup (``welcome.epoch`` changed)."""

    old_epoch: str
    new_epoch: str
    lost: tuple[LostRange, ...]


@dataclass(frozen=True)
class HistoryGap:
    """Seqs ``first_missing`` .. ``history_start - 1`` of a conversation are gone
    from the server for this user before this device held them: the retention
    purge removed them, or the user joined a group whose history is
    ``joined`` later. The cursor has moved past them (they will not come);
    an app shows "older messages are no longer available" there.
    """

    conversation_id: str
    first_missing: int
    history_start: int


ConnectionStatus = Literal["connecting", "online", "offline", "stopped"]


@dataclass(frozen=True)
class ConnectionChanged:
    """The connection's status; ``retry_in`` (seconds) when offline and waiting."""

    status: ConnectionStatus
    retry_in: float | None = None
    reason: str = ""


ResilientEvent = Message | MessageSent | SendFailed | EpochChanged | HistoryGap | ConnectionChanged


class _Link(enum.Enum):
    IDLE = "idle"  # not started
    WAITING = "waiting"  # offline, a Connect is due at _reconnect_at
    CONNECTING = "connecting"  # Connect issued, no answer yet
    ONLINE = "online"
    STOPPED = "stopped"


@dataclass
class _EpochCheck:
    old_epoch: str
    new_epoch: str
    # conversation -> seq the verification sync started after.
    starts: dict[str, int]
    # The server's last_seq and history_start per conversation, from the
    # verification syncs.
    last_seq: dict[str, int] = field(default_factory=dict)
    history_start: dict[str, int] = field(default_factory=dict)
    # Server messages fetched so far, per conversation, by seq.
    fetched: dict[str, dict[int, Message]] = field(default_factory=dict)
    lost: list[LostRange] = field(default_factory=list)
    # Live messages held back until the check is over.
    held_back: list[Message] = field(default_factory=list)


class ResilientCore:
    """The state machine behind :class:`~tidings_client.resilient.ResilientClient`.

    See the module docstring for the rules. ``rng`` seeds the backoff jitter.
    """

    def __init__(
        self,
        outbox: Outbox,
        store: MessageStore,
        config: ResilienceConfig | None = None,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config if config is not None else ResilienceConfig()
        self.outbox = outbox
        self.store = store
        self.backoff = backoff or Backoff(
            self.config.backoff_base,
            self.config.backoff_factor,
            self.config.backoff_cap,
            self.config.backoff_jitter,
        )
        self._commands: list[Command] = []
        self._events: list[ResilientEvent] = []
        self._link = _Link.IDLE
        self._connected_at = 0.0
        self._reconnect_at: float | None = None
        self._forced_delay: float | None = None
        self.welcome: Welcome | None = None
        self.user_id: str | None = store.user_id
        # Outbox mirror in send order (the table is the truth; this avoids a
        # query per pump).
        self._entries: dict[str, OutboxEntry] = {e.client_msg_id: e for e in outbox.entries()}
        self._in_flight: dict[str, float] = {}  # client_msg_id -> ack deadline
        self._not_before: dict[str, float] = {}  # client_msg_id -> earliest resend
        self._paused_until = 0.0
        # Receive side.
        self._cursors: dict[str, int] = store.cursors()
        self._held: dict[str, dict[int, Message]] = {}
        # Conversations the store has no cursor for yet, and the seq just below
        # our own first message acked there. The server moves this device's
        # cursor past its own messages as it stores them, so a first sync would
        # start after them; and their acks are only held, which a dropped
        # connection clears. Syncs ask for these conversations from here, and
        # such a conversation gets its starting point only once none of our
        # sends to it awaits an ack (a lost ack comes back as a duplicate's).
        self._floors: dict[str, int] = {}
        self._sync_in_flight = False
        self._sync_wanted = False
        self._sync_retry_at: float | None = None
        self._epoch_check: _EpochCheck | None = None
        self._reconcile_in_flight = False
        self._stalled_syncs = 0
        self._delivered_sent: dict[str, int] = {}
        self._delivered_due: dict[str, float] = {}
        self._undelivered: dict[str, int] = {}
        self.duplicates_dropped = 0

    # -- plumbing ----------------------------------------------------------------------

    def take_commands(self) -> list[Command]:
        """Commands for the driver, in order; clears the queue."""
        commands, self._commands = self._commands, []
        return commands

    def take_events(self) -> list[ResilientEvent]:
        """Events for the app, in order; clears the queue."""
        events, self._events = self._events, []
        return events

    @property
    def online(self) -> bool:
        return self._link is _Link.ONLINE

    @property
    def cursors(self) -> dict[str, int]:
        """Per conversation, the seq up to which every message is stored."""
        return dict(self._cursors)

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._in_flight)

    def held(self, conversation_id: str) -> list[int]:
        """Seqs received above a gap and not yet surfaced (for tests and diagnostics)."""
        return sorted(self._held.get(conversation_id, {}))

    def entries(self) -> list[OutboxEntry]:
        """The outbox, in send order."""
        return list(self._entries.values())

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (``None``: only on input)."""
        deadlines: list[float] = []
        if self._link is _Link.WAITING and self._reconnect_at is not None:
            deadlines.append(self._reconnect_at)
        if self._link is _Link.ONLINE:
            deadlines.extend(self._in_flight.values())
            deadlines.extend(self._delivered_due.values())
            if self._sync_retry_at is not None:
                deadlines.append(self._sync_retry_at)
            # Resends waiting for retry_after matter only while the window has
            # room; otherwise the next ack or timeout is the next event anyway.
            if len(self._in_flight) < self.config.max_in_flight:
                deadlines.extend(
                    t for cmid, t in self._not_before.items() if cmid not in self._in_flight
                )
                if self._paused_until and self._has_sendable():
                    deadlines.append(self._paused_until)
        return min(deadlines) if deadlines else None

    # -- app calls ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: connect at once."""
        if self._link is _Link.IDLE:
            self._connect(now)

    def stop(self) -> None:
        """Stop connecting; the outbox stays on disk for the next start."""
        self._link = _Link.STOPPED
        self._in_flight.clear()
        self._events.append(ConnectionChanged("stopped"))

    def send(
        self,
        now: float,
        conversation_id: str,
        content: Content | str,
        client_msg_id: str | None = None,
    ) -> str:
        """Commit a message to the outbox, then send it when possible; returns its client_msg_id."""
        body: Content = {"text": content} if isinstance(content, str) else content
        cmid = client_msg_id if client_msg_id is not None else str(uuid.uuid4())
        entry = self.outbox.add(cmid, conversation_id, body)
        self._entries[cmid] = entry
        self._pump(now)
        return cmid

    def retry(self, now: float, client_msg_id: str) -> None:
        """Make a failed or rejected entry pending again, with fresh counters."""
        if client_msg_id not in self._entries:
            raise KeyError(client_msg_id)
        self.outbox.set_status(client_msg_id, OutboxStatus.PENDING)
        self._refresh(client_msg_id)
        self._not_before.pop(client_msg_id, None)
        self._pump(now)

    def discard(self, client_msg_id: str) -> bool:
        """Remove an entry for good (the app gave up on it); ``False`` if absent."""
        self._entries.pop(client_msg_id, None)
        self._in_flight.pop(client_msg_id, None)
        self._not_before.pop(client_msg_id, None)
        return self.outbox.remove(client_msg_id)

    def wake_up(self, now: float) -> None:
        """The app came to the foreground: resync everything now, or reconnect now."""
        if self._link is _Link.ONLINE:
            self._want_sync(now)
        elif self._link is _Link.WAITING:
            self.backoff.reset()
            self._connect(now)

    # -- connection events -------------------------------------------------------------

    def connected(self, now: float, welcome: Welcome) -> None:
        """A connection is open (welcome received)."""
        if self._link is _Link.STOPPED:
            return
        self._link = _Link.ONLINE
        self._connected_at = now
        self._reconnect_at = None
        self._forced_delay = None
        self._paused_until = 0.0
        self._sync_in_flight = False
        self._sync_retry_at = None
        self._reconcile_in_flight = False
        self._delivered_sent.clear()
        self.welcome = welcome
        if self.user_id != welcome.user_id:
            self.user_id = welcome.user_id
            self.store.set_user_id(welcome.user_id)
        self._events.append(ConnectionChanged("online"))
        stored = self.store.epoch
        if stored is None:
            self.store.set_epoch(welcome.epoch)
        elif stored != welcome.epoch:
            self._begin_epoch_check(stored, welcome.epoch)
        if self._epoch_check is None:
            self._want_sync(now)
            self._send_reconcile()
        self._pump(now)

    def connect_failed(
        self, now: float, reason: str, retry_after: float | None = None, fatal: bool = False
    ) -> None:
        """The connection attempt failed; ``fatal`` (e.g. unauthorized) stops the client."""
        if fatal:
            self._link = _Link.STOPPED
            self._events.append(ConnectionChanged("stopped", None, reason))
            return
        self._schedule_reconnect(now, reason, retry_after)

    def disconnected(self, now: float, reason: str = "", retry_after: float | None = None) -> None:
        """The connection is gone (closed, dropped, heartbeat timeout)."""
        if self._link is not _Link.ONLINE:
            return
        if now - self._connected_at >= self.config.stable_after:
            self.backoff.reset()
        for cmid in list(self._in_flight):
            self._count_attempt(cmid, "connection_closed", "the connection dropped before the ack")
        self._in_flight.clear()
        # Held messages are refetched by the next connection's sync; keeping
        # them would mix seqs from two epochs if the server was restored.
        self._held.clear()
        self._sync_in_flight = False
        self._sync_wanted = False
        self._sync_retry_at = None
        self._delivered_due.clear()
        self._undelivered.clear()
        self._reconcile_in_flight = False  # still in the store: sent on the next connection
        if self._epoch_check is not None:
            self._epoch_check = None  # redone on the next connection (epoch not stored yet)
        self._schedule_reconnect(now, reason, retry_after)

    def reconnect_requested(self, now: float, after_ms: int, reason: str = "") -> None:
        """The server is draining (``reconnect`` frame): leave, come back after ``after_ms``."""
        if self._link is not _Link.ONLINE:
            return
        self._forced_delay = max(0.0, after_ms / 1000)
        self._commands.append(Disconnect(reason or "server asked to reconnect"))

    # -- answers -----------------------------------------------------------------------

    def ack_received(self, now: float, ack: Ack) -> None:
        """A ``send`` was acknowledged (possibly as a duplicate of an earlier attempt)."""
        self._in_flight.pop(ack.client_msg_id, None)
        entry = self._entries.pop(ack.client_msg_id, None)
        if entry is None:
            return  # a second ack for one already settled
        self._not_before.pop(ack.client_msg_id, None)
        self.outbox.remove(ack.client_msg_id)
        cid = ack.conversation_id
        if cid not in self._cursors:
            self._floors[cid] = min(self._floors.get(cid, ack.seq), ack.seq - 1)
            if not self._sending_to(cid):
                self._want_sync(now)  # where it starts can be known now
        self._events.append(
            MessageSent(
                ack.client_msg_id,
                ack.conversation_id,
                ack.seq,
                ack.message_id,
                ack.duplicate,
                entry.attempts,
            )
        )
        own = Message(
            conversation_id=ack.conversation_id,
            seq=ack.seq,
            message_id=ack.message_id,
            sender_id=self.user_id or "",
            client_msg_id=ack.client_msg_id,
            ts=ack.ts,
            content=entry.content,
        )
        self._receive(now, [own])
        self._pump(now)

    def send_error(
        self,
        now: float,
        client_msg_id: str,
        code: str,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        """An ``error`` answered a send (or the SDK refused it before sending)."""
        self._in_flight.pop(client_msg_id, None)
        entry = self._entries.get(client_msg_id)
        if entry is None:
            return
        if code in DEFERRAL_CODES:
            self.outbox.record_deferral(client_msg_id)
            entry = self._refresh(client_msg_id)
            if entry.deferrals >= self.config.max_deferrals:
                self._fail(entry, OutboxStatus.FAILED, code, message, retryable=True)
            else:
                delay = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_S
                self._not_before[client_msg_id] = now + delay
                if code == "rate_limited":
                    # The limit is per user: every send would be refused now.
                    self._paused_until = max(self._paused_until, now + delay)
        else:
            self._fail(entry, OutboxStatus.REJECTED, code, message, retryable=False)
        self._pump(now)

    def reconcile_sent(self, now: float, epoch: str) -> None:
        """The server stored this device's report for ``epoch``."""
        self._reconcile_in_flight = False
        self.store.reconcile_done(epoch)

    def reconcile_failed(self, now: float, epoch: str, code: str, retryable: bool) -> None:
        """The report was not stored. A retryable failure (timeout, ``unavailable``)
        keeps it for the next connection; any other would fail the same way
        again, so it is dropped (``code`` is for the driver's log)."""
        self._reconcile_in_flight = False
        if not retryable:
            self.store.reconcile_done(epoch)

    def message_received(self, now: float, message: Message) -> None:
        """A ``msg`` frame (live or redelivered)."""
        self._receive(now, [message])

    def sync_completed(self, now: float, result: SyncResult) -> None:
        """The answer to the last :class:`RequestSync`, all pages."""
        self._sync_in_flight = False
        check = self._epoch_check
        if check is not None:
            self._continue_epoch_check(now, check, result)
            return
        # Conversations unknown to the store start where the server started
        # them (this device's delivered cursor), as a sync without cursor does,
        # or below our own first message there if that is lower (see _floors);
        # not past 0 while a send of ours there awaits its ack (the server's
        # cursor may be past it, and its seq is not known yet).
        baselines: dict[str, int] = {}
        for s in result.conversations:
            cid = s.conversation_id
            if cid not in self._cursors and not (s.delivered_seq and self._sending_to(cid)):
                floor = self._floors.pop(cid, s.delivered_seq)
                baselines[cid] = min(s.delivered_seq, floor)
        if baselines:
            self._cursors.update(baselines)
            self.store.save([], baselines)
        skipped = self._skip_unreadable(result.conversations)
        progress = self._receive(now, result.messages, also=[*baselines, *skipped])
        for state in result.conversations:
            cid = state.conversation_id
            acked = max(state.delivered_seq, self._delivered_sent.get(cid, 0))
            if self._cursors.get(cid, 0) > acked:
                self._delivered_due.setdefault(cid, now + self.config.delivered_delay)
        self._stalled_syncs = 0 if progress else self._stalled_syncs + 1
        if not any(self._held.values()):
            if self._sync_wanted:
                self._want_sync(now)
        elif self._stalled_syncs >= MAX_STALLED_SYNCS:
            # The server cannot fill these gaps (e.g. we left the conversation):
            # drop what is held; redelivery or the next wake-up brings it back.
            self._held.clear()
            self._stalled_syncs = 0
        elif progress:
            self._want_sync(now)
        else:
            self._sync_retry_at = now + SYNC_RETRY_DELAY_S  # do not spin against the server

    def sync_failed(self, now: float, reason: str = "") -> None:
        """The sync failed (timeout, error); try again a little later."""
        self._sync_in_flight = False
        if self._link is _Link.ONLINE:
            self._sync_retry_at = now + SYNC_RETRY_DELAY_S

    def tick(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        if self._link is _Link.WAITING:
            if self._reconnect_at is not None and now >= self._reconnect_at:
                self._connect(now)
            return
        if self._link is not _Link.ONLINE:
            return
        for cmid, deadline in list(self._in_flight.items()):
            if now >= deadline:
                del self._in_flight[cmid]
                self._count_attempt(cmid, "timeout", f"no ack within {self.config.ack_timeout}s")
        if self._sync_retry_at is not None and now >= self._sync_retry_at:
            self._sync_retry_at = None
            self._want_sync(now)
        for cid, due in list(self._delivered_due.items()):
            if now >= due:
                self._flush_delivered(cid)
        self._pump(now)

    # -- outbox internals --------------------------------------------------------------

    def _refresh(self, client_msg_id: str) -> OutboxEntry:
        entry = self.outbox.get(client_msg_id)
        assert entry is not None
        self._entries[client_msg_id] = entry
        return entry

    def _count_attempt(self, cmid: str, code: str, message: str) -> None:
        if cmid not in self._entries:
            return
        self.outbox.record_attempt(cmid)
        entry = self._refresh(cmid)
        if entry.attempts >= self.config.max_attempts:
            self._fail(entry, OutboxStatus.FAILED, ATTEMPTS_EXHAUSTED, message, retryable=True)

    def _fail(
        self, entry: OutboxEntry, status: OutboxStatus, code: str, message: str, *, retryable: bool
    ) -> None:
        self.outbox.set_status(entry.client_msg_id, status, code, message)
        entry = self._refresh(entry.client_msg_id)
        self._not_before.pop(entry.client_msg_id, None)
        self._events.append(
            SendFailed(
                entry.client_msg_id, entry.conversation_id, code, message, retryable, entry.attempts
            )
        )

    def _has_sendable(self) -> bool:
        return any(
            e.status is OutboxStatus.PENDING and e.client_msg_id not in self._in_flight
            for e in self._entries.values()
        )

    def _pump(self, now: float) -> None:
        """Transmit pending entries, oldest first, within the in-flight window."""
        if self._link is not _Link.ONLINE or now < self._paused_until:
            return
        self._paused_until = 0.0
        for entry in self._entries.values():
            if len(self._in_flight) >= self.config.max_in_flight:
                return
            cmid = entry.client_msg_id
            if entry.status is not OutboxStatus.PENDING or cmid in self._in_flight:
                continue
            if self._not_before.get(cmid, 0.0) > now:
                continue
            self._not_before.pop(cmid, None)
            self._in_flight[cmid] = now + self.config.ack_timeout
            self._commands.append(Transmit(cmid, entry.conversation_id, entry.content))

    # -- connection internals ----------------------------------------------------------

    def _connect(self, now: float) -> None:
        self._link = _Link.CONNECTING
        self._reconnect_at = None
        self._events.append(ConnectionChanged("connecting"))
        self._commands.append(Connect(self.store.epoch))

    def _schedule_reconnect(self, now: float, reason: str, retry_after: float | None) -> None:
        if self._link is _Link.STOPPED:
            return
        if self._forced_delay is not None:
            delay = self._forced_delay  # the server's drain delay, already randomised
            self._forced_delay = None
        elif retry_after is not None:
            # A 503's Retry-After: the server is up and spreads the clients it
            # refuses itself (jittered, scaled to its backlog). Adding our own
            # interval on top, and moving the schedule on, sent clients refused
            # a few times in a herd 30-60 s away while the nodes had room.
            # The floor keeps a proxy that says "Retry-After: 0" from turning
            # this into a tight loop.
            delay = max(retry_after, MIN_SERVER_RETRY_S)
        else:
            delay = self.backoff.next_delay()
        self._link = _Link.WAITING
        self._reconnect_at = now + delay
        self._events.append(ConnectionChanged("offline", delay, reason))

    # -- receive internals -------------------------------------------------------------

    def _sending_to(self, conversation_id: str) -> bool:
        """Whether a send of ours to `conversation_id` is still in the outbox."""
        return any(e.conversation_id == conversation_id for e in self._entries.values())

    def _want_sync(self, now: float) -> None:
        if self._link is not _Link.ONLINE:
            return
        if self._sync_in_flight:
            self._sync_wanted = True
            return
        self._sync_wanted = False
        self._sync_retry_at = None
        self._sync_in_flight = True
        self._commands.append(RequestSync({**self._floors, **self._cursors}))

    def _receive(self, now: float, messages: Iterable[Message], also: Iterable[str] = ()) -> bool:
        """Dedupe, order and store messages; surface what became contiguous.

        ``also`` names conversations whose held messages may have become
        contiguous for another reason (a new starting point). Returns whether
        any message was surfaced.
        """
        if self._epoch_check is not None:
            self._epoch_check.held_back.extend(messages)
            return False
        touched = set(also)
        for message in messages:
            cid, seq = message.conversation_id, message.seq
            held = self._held.setdefault(cid, {})
            cursor = self._cursors.get(cid)
            if (cursor is not None and seq <= cursor) or seq in held:
                self.duplicates_dropped += 1
                continue
            held[seq] = message
            touched.add(cid)
        surfaced: list[Message] = []
        moved: dict[str, int] = {}
        for cid in touched:
            held = self._held.get(cid, {})
            cursor = self._cursors.get(cid)
            if cursor is None:
                continue  # unknown conversation: where it starts comes from a sync
            start = cursor
            while cursor + 1 in held:
                cursor += 1
                surfaced.append(held.pop(cursor))
            if cursor != start:
                self._cursors[cid] = moved[cid] = cursor
        if surfaced:
            self.store.save(surfaced, moved)
            for message in surfaced:
                self._on_surfaced(now, message)
        if any(self._held.get(cid) for cid in touched):
            self._want_sync(now)  # a gap (or an unknown conversation): ask the server
        return bool(surfaced)

    def _skip_unreadable(self, states: Iterable[ConversationSyncState]) -> list[str]:
        """Move each cursor below a conversation's ``history_start`` up to it.

        The server no longer has (or never shows this user) what lies below,
        so waiting for it would stall the conversation for good. Each move is
        one :class:`HistoryGap`; once moved, the next sync does not see a gap.
        Returns the conversations moved (their held messages may now follow on).
        """
        moved: dict[str, int] = {}
        for state in states:
            cid = state.conversation_id
            cursor = self._cursors.get(cid)
            if cursor is None or state.history_start <= cursor + 1:
                continue
            moved[cid] = state.history_start - 1
            held = self._held.get(cid, {})
            for seq in [s for s in held if s < state.history_start]:
                del held[seq]
            self._events.append(HistoryGap(cid, cursor + 1, state.history_start))
        if moved:
            self._cursors.update(moved)
            self.store.save([], moved)
        return list(moved)

    def _on_surfaced(self, now: float, message: Message) -> None:
        self._events.append(message)
        cid = message.conversation_id
        if message.sender_id == self.user_id:
            self.store.confirm(cid, message.sender_id, message.client_msg_id)
            entry = self._entries.get(message.client_msg_id)
            if entry is not None and entry.conversation_id == cid:
                # Our own message came back (a sync): it was stored even if
                # its ack was lost, so it has left the outbox for good.
                self._entries.pop(message.client_msg_id)
                self._in_flight.pop(message.client_msg_id, None)
                self._not_before.pop(message.client_msg_id, None)
                self.outbox.remove(message.client_msg_id)
                self._events.append(
                    MessageSent(message.client_msg_id, cid, message.seq, message.message_id, True)
                )
        else:
            self.store.confirm(cid, message.sender_id, message.client_msg_id)
        count = self._undelivered.get(cid, 0) + 1
        self._undelivered[cid] = count
        if count >= self.config.delivered_batch:
            self._flush_delivered(cid)
        else:
            self._delivered_due.setdefault(cid, now + self.config.delivered_delay)

    def _flush_delivered(self, cid: str) -> None:
        self._delivered_due.pop(cid, None)
        self._undelivered.pop(cid, None)
        seq = self._cursors.get(cid, 0)
        if self._link is _Link.ONLINE and seq > self._delivered_sent.get(cid, 0):
            self._delivered_sent[cid] = seq
            self._commands.append(SendDelivered(cid, seq))

    # -- epochs ------------------------------------------------------------------------

    def _begin_epoch_check(self, old_epoch: str, new_epoch: str) -> None:
        window = self.config.epoch_verify_window
        starts = {cid: max(0, cursor - window) for cid, cursor in self._cursors.items()}
        self._epoch_check = _EpochCheck(old_epoch, new_epoch, starts)
        self._held.clear()
        self._sync_in_flight = True
        self._commands.append(RequestSync(dict(starts)))

    def _continue_epoch_check(self, now: float, check: _EpochCheck, result: SyncResult) -> None:
        for state in result.conversations:
            check.last_seq[state.conversation_id] = state.last_seq
            check.history_start[state.conversation_id] = state.history_start
        for message in result.messages:
            if message.conversation_id in check.starts:
                check.fetched.setdefault(message.conversation_id, {})[message.seq] = message
            else:
                check.held_back.append(message)
        # Live messages (and our acks) on this connection are the server's
        # current history too.
        for message in check.held_back:
            if message.conversation_id in check.starts:
                fetched = check.fetched.setdefault(message.conversation_id, {})
                fetched.setdefault(message.seq, message)
        deeper: dict[str, int] = {}
        for cid, start in list(check.starts.items()):
            # A conversation the server does not list is unknown to it now
            # (created after the backup): everything in it is unconfirmed.
            last_seq = check.last_seq.get(cid, 0)
            # Seqs below history_start were purged, not lost in the restore.
            compare_from = max(start, check.history_start.get(cid, 1) - 1)
            fetched = check.fetched.get(cid, {})
            divergence = self._find_divergence(cid, compare_from, last_seq, fetched)
            if divergence is not None and divergence == start + 1 and start > 0:
                deeper[cid] = 0  # it may diverge below the window: look from the start
                continue
            del check.starts[cid]
            if divergence is not None:
                self._mark_lost(check, cid, divergence)
        if deeper:
            check.starts.update(deeper)
            self._sync_in_flight = True
            self._commands.append(RequestSync(dict(deeper)))
            return
        # Done: record the new epoch (with its report) last, then surface
        # what the server has.
        self._epoch_check = None
        self.store.finish_epoch_change(_reconcile_report(check))
        self._events.append(EpochChanged(check.old_epoch, check.new_epoch, tuple(check.lost)))
        self._send_reconcile()
        replay = [
            m for fetched in check.fetched.values() for m in sorted(fetched.values(), key=_seq)
        ]
        self._receive(now, [*replay, *check.held_back])
        self._want_sync(now)
        self._pump(now)

    def _find_divergence(
        self, cid: str, start: int, last_seq: int, fetched: dict[int, Message]
    ) -> int | None:
        """The first seq above ``start`` where the store and the server disagree.

        Seqs the store never held (below a starting point taken from the
        server) cannot disagree; seqs above the server's ``last_seq`` always do.
        """
        cursor = self._cursors.get(cid, 0)
        stored = {m.seq: m for m in self.store.messages(cid, after_seq=start)}
        for seq in range(start + 1, min(cursor, last_seq) + 1):
            mine, theirs = stored.get(seq), fetched.get(seq)
            if mine is not None and (theirs is None or mine.message_id != theirs.message_id):
                return seq
        return last_seq + 1 if cursor > last_seq else None

    def _mark_lost(self, check: _EpochCheck, cid: str, divergence: int) -> None:
        old_cursor = self._cursors.get(cid, 0)
        moved = self.store.mark_unconfirmed(cid, divergence, check.old_epoch)
        self._cursors[cid] = divergence - 1
        resent: list[str] = []
        kept: list[str] = []
        for message in moved:
            if message.sender_id == self.user_id:
                entry = self.outbox.add(message.client_msg_id, cid, message.content)
                self._entries[entry.client_msg_id] = entry
                resent.append(message.client_msg_id)
            else:
                kept.append(message.message_id)
        check.lost.append(LostRange(cid, divergence, old_cursor, tuple(resent), tuple(kept)))

    def _send_reconcile(self) -> None:
        """Send the stored report of the current epoch, if the server lacks it."""
        if self._link is not _Link.ONLINE or self._reconcile_in_flight or self.welcome is None:
            return
        report = self.store.pending_reconcile()
        if report is not None and report.epoch == self.welcome.epoch:
            self._reconcile_in_flight = True
            self._commands.append(SendReconcile(report))


def _reconcile_report(check: _EpochCheck) -> ReconcileRequest:
    """The ``reconcile`` report of a finished epoch check (see the module docstring)."""
    conversations = [
        ReconcileConversation(
            lost.conversation_id,
            check.last_seq.get(lost.conversation_id, 0),
            lost.last_seq,
            len(lost.resent),
            len(lost.not_on_server),
        )
        for lost in check.lost
    ]
    conversations.sort(key=lambda c: c.own + c.others, reverse=True)
    return ReconcileRequest(check.new_epoch, conversations[:MAX_RECONCILE_CONVERSATIONS])


def _seq(message: Message) -> int:
    return message.seq
