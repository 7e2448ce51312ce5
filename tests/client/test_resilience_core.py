"""Unit tests of the resilient client's sans-I/O core: outbox, gaps, epochs, reconnect.

Time is a number passed in; the stores are SQLite files in tmp_path (or
``:memory:``). No sockets, no event loop, no sleeping.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from tidings_client import (
    Ack,
    Backoff,
    Connect,
    ConnectionChanged,
    ConversationSyncState,
    Disconnect,
    EpochChanged,
    Message,
    MessageSent,
    MessageStore,
    Outbox,
    OutboxStatus,
    ReconcileConversation,
    ReconcileRequest,
    RequestSync,
    ResilienceConfig,
    ResilientCore,
    SendDelivered,
    SendFailed,
    SendReconcile,
    SyncResult,
    Transmit,
    Welcome,
)
from tidings_client.resilience import Command, ResilientEvent

ME = "u-me"
BOB = "u-bob"
CID = "c1"
CONFIG = ResilienceConfig(
    ack_timeout=3.0,
    max_attempts=3,
    max_deferrals=5,
    backoff_jitter="none",
    stable_after=30.0,
    delivered_batch=3,
    delivered_delay=0.5,
    epoch_verify_window=2,
)


def welcome(epoch: str = "e1") -> Welcome:
    return Welcome(ME, "d1", "s1", epoch, 25_000, 0)


def msg(seq: int, cid: str = CID, sender: str = BOB, mid: str | None = None) -> Message:
    return Message(cid, seq, mid or f"m{seq}", sender, f"cm-{sender}-{seq}", 1000 + seq, {"t": seq})


def ack(cmid: str, seq: int, cid: str = CID, duplicate: bool = False) -> Ack:
    return Ack(cmid, cid, seq, f"m{seq}", 1000 + seq, duplicate)


def result(
    messages: list[Message], last: dict[str, int] | None = None, delivered: int = 0
) -> SyncResult:
    last = last if last is not None else {CID: max((m.seq for m in messages), default=0)}
    states = [ConversationSyncState(cid, seq, delivered) for cid, seq in last.items()]
    return SyncResult("tok", states, messages)


class Harness:
    """A core on real SQLite stores, with helpers to read what it did."""

    def __init__(self, path: str = ":memory:", config: ResilienceConfig = CONFIG) -> None:
        self.outbox = Outbox(path)
        self.store = MessageStore(path)
        self.core = ResilientCore(
            self.outbox, self.store, config, backoff=Backoff(jitter="none", rng=random.Random(1))
        )
        self.commands: list[Command] = []
        self.events: list[ResilientEvent] = []

    def take(self) -> tuple[list[Command], list[ResilientEvent]]:
        commands, events = self.core.take_commands(), self.core.take_events()
        self.commands += commands
        self.events += events
        return commands, events

    def online(self, now: float = 0.0, epoch: str = "e1", sync: SyncResult | None = None) -> None:
        """Start (if needed), connect, and answer the first sync."""
        self.core.start(now)
        self.core.connected(now, welcome(epoch))
        commands, _ = self.take()
        if sync is not None:
            assert any(isinstance(c, RequestSync) for c in commands)
            self.core.sync_completed(now, sync)
            self.take()

    def close(self) -> None:
        self.outbox.close()
        self.store.close()


def transmits(commands: list[Command]) -> list[str]:
    return [c.client_msg_id for c in commands if isinstance(c, Transmit)]


def surfaced(events: list[ResilientEvent]) -> list[tuple[str, int]]:
    return [(e.conversation_id, e.seq) for e in events if isinstance(e, Message)]


# -- outbox ------------------------------------------------------------------------------


def test_send_is_persisted_before_the_first_transmission() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(1.0, CID, "hello")
    # Committed to the outbox by the time the Transmit command exists.
    entry = h.outbox.get(cmid)
    assert entry is not None
    assert entry.content == {"text": "hello"}
    commands, _ = h.take()
    assert transmits(commands) == [cmid]


def test_send_while_offline_waits_and_ack_removes() -> None:
    h = Harness()
    cmid = h.core.send(0.0, CID, "queued")
    h.core.start(0.0)
    commands, _ = h.take()
    assert transmits(commands) == []  # not connected yet
    assert [type(c) for c in commands] == [Connect]
    h.core.connected(1.0, welcome())
    commands, _ = h.take()
    assert transmits(commands) == [cmid]
    h.core.sync_completed(1.05, result([]))
    h.core.ack_received(1.1, ack(cmid, 1))
    _, events = h.take()
    assert next(e for e in events if isinstance(e, MessageSent)).seq == 1
    assert len(h.outbox) == 0
    # Our own message is part of the ordered stream and the store.
    assert h.store.message(CID, 1) is not None


def test_timeout_resends_same_id_then_failed_and_kept() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, "lost")
    assert transmits(h.take()[0]) == [cmid]
    assert h.core.next_deadline() == pytest.approx(CONFIG.ack_timeout)
    h.core.tick(2.9)
    assert transmits(h.take()[0]) == []  # not yet
    h.core.tick(3.0)
    assert transmits(h.take()[0]) == [cmid]  # attempt 2, same id
    h.core.tick(6.0)
    assert transmits(h.take()[0]) == [cmid]  # attempt 3
    h.core.tick(9.0)
    commands, events = h.take()
    assert transmits(commands) == []
    failed = [e for e in events if isinstance(e, SendFailed)]
    assert len(failed) == 1
    assert failed[0].retryable
    assert failed[0].attempts == CONFIG.max_attempts
    entry = h.outbox.get(cmid)
    assert entry is not None
    assert entry.status is OutboxStatus.FAILED  # kept, never dropped silently
    # The app retries: fresh attempts, same id.
    h.core.retry(10.0, cmid)
    assert transmits(h.take()[0]) == [cmid]
    # A late ack settles it whatever its state.
    h.core.ack_received(10.5, ack(cmid, 1, duplicate=True))
    assert len(h.outbox) == 0


def test_drop_resends_with_same_id_after_reconnect() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, "in flight")
    h.take()
    h.core.disconnected(1.0, "cut")
    _, events = h.take()
    offline = [e for e in events if isinstance(e, ConnectionChanged) and e.status == "offline"]
    assert offline[0].retry_in == pytest.approx(1.0)  # backoff interval 0
    h.core.tick(1.5)
    commands, _ = h.take()
    assert transmits(commands) == []
    h.core.tick(2.0)
    assert [type(c) for c in h.take()[0]] == [Connect]
    h.core.connected(2.1, welcome())
    assert transmits(h.take()[0]) == [cmid]
    entry = h.outbox.get(cmid)
    assert entry is not None
    assert entry.attempts == 1  # the dropped transmission counted


def test_rate_limited_waits_retry_after_without_using_attempts() -> None:
    h = Harness()
    h.online(sync=result([]))
    first = h.core.send(0.0, CID, "a")
    h.take()
    h.core.send_error(0.1, first, "rate_limited", "slow down", retry_after=2.0)
    second = h.core.send(0.2, CID, "b")
    assert transmits(h.take()[0]) == []  # paused: the limit is per user
    assert h.core.next_deadline() == pytest.approx(2.1)
    h.core.tick(2.1)
    assert transmits(h.take()[0]) == [first, second]  # in order
    entry = h.outbox.get(first)
    assert entry is not None
    assert (entry.attempts, entry.deferrals) == (0, 1)


def test_deferrals_are_bounded() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, "a")
    now = 0.0
    for _ in range(CONFIG.max_deferrals):
        h.take()
        h.core.send_error(now, cmid, "unavailable", "store down", retry_after=0.1)
        now += 0.1
        h.core.tick(now)
    failed = [e for e in h.take()[1] if isinstance(e, SendFailed)]
    assert failed
    assert failed[0].code == "unavailable"
    assert failed[0].retryable


def test_non_retryable_error_is_reported_and_kept_until_discarded() -> None:
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, "x")
    h.take()
    h.core.send_error(0.1, cmid, "not_member", "you left")
    _commands, events = h.take()
    failed = [e for e in events if isinstance(e, SendFailed)]
    assert failed[0].code == "not_member"
    assert not failed[0].retryable
    h.core.tick(100.0)
    assert transmits(h.take()[0]) == []  # never resent by itself
    entry = h.outbox.get(cmid)
    assert entry is not None
    assert entry.status is OutboxStatus.REJECTED
    assert h.core.discard(cmid)
    assert len(h.outbox) == 0


def test_restart_flushes_the_outbox(tmp_path: Path) -> None:
    path = str(tmp_path / "client.db")
    first = Harness(path)
    first.online(sync=result([]))
    cmids = [first.core.send(0.0, CID, f"m{i}") for i in range(3)]
    first.take()
    first.close()  # the process dies with three unacknowledged sends

    second = Harness(path)
    assert [e.client_msg_id for e in second.core.entries()] == cmids
    second.core.start(0.0)
    second.core.connected(0.0, welcome())
    assert transmits(second.take()[0]) == cmids  # same ids, same order
    second.close()


def test_own_message_seen_in_sync_settles_the_outbox() -> None:
    """The ack was lost but the message was stored: the sync proves it."""
    h = Harness()
    h.online(sync=result([]))
    cmid = h.core.send(0.0, CID, "x")
    h.take()
    h.core.disconnected(0.5)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome())
    h.take()
    own = Message(CID, 1, "m1", ME, cmid, 1, {"text": "x"})
    h.core.sync_completed(10.1, result([own]))
    _, events = h.take()
    assert any(isinstance(e, MessageSent) and e.client_msg_id == cmid for e in events)
    assert len(h.outbox) == 0


# -- receive side: dedup, gaps, delivered ------------------------------------------------


def test_in_order_messages_surface_and_duplicates_are_dropped() -> None:
    h = Harness()
    h.online(sync=result([msg(1)]))
    h.core.message_received(1.0, msg(2))
    h.core.message_received(1.0, msg(2))  # redelivered
    h.core.message_received(1.0, msg(1))
    h.take()
    assert surfaced(h.events) == [(CID, 1), (CID, 2)]
    assert h.core.duplicates_dropped == 2
    assert h.store.cursors() == {CID: 2}


def test_gap_holds_later_messages_and_syncs_to_fill_it() -> None:
    h = Harness()
    h.online(sync=result([msg(1)]))
    h.take()
    h.core.message_received(1.0, msg(4))
    h.core.message_received(1.0, msg(5))
    commands, events = h.take()
    assert surfaced(events) == []  # held: 2 and 3 are missing
    assert h.core.held(CID) == [4, 5]
    syncs = [c for c in commands if isinstance(c, RequestSync)]
    assert len(syncs) == 1  # one sync, not one per held message
    assert syncs[0].cursors == {CID: 1}
    # Out of order within the answer is fine too.
    h.core.sync_completed(1.2, result([msg(3), msg(2), msg(4)], last={CID: 5}))
    _, events = h.take()
    assert surfaced(events) == [(CID, 2), (CID, 3), (CID, 4), (CID, 5)]
    assert h.core.held(CID) == []
    assert [m.seq for m in h.store.messages(CID)] == [1, 2, 3, 4, 5]


def test_unknown_conversation_starts_where_the_server_does() -> None:
    h = Harness()
    h.online(sync=result([]))
    h.take()
    h.core.message_received(1.0, msg(8, cid="c2"))
    commands, events = h.take()
    assert surfaced(events) == []
    assert any(isinstance(c, RequestSync) for c in commands)
    # This device already confirmed up to 6; the server sends 7 and 8.
    h.core.sync_completed(1.1, result([msg(7, "c2"), msg(8, "c2")], {"c2": 8}, delivered=6))
    assert surfaced(h.take()[1]) == [("c2", 7), ("c2", 8)]


def test_gap_that_cannot_be_filled_does_not_spin() -> None:
    h = Harness()
    h.online(sync=result([msg(1)]))
    h.take()
    h.core.message_received(1.0, msg(5))
    h.take()
    for attempt in range(3):
        h.core.sync_completed(2.0 + attempt, result([], last={CID: 5}))
        commands, _ = h.take()
        assert not any(isinstance(c, RequestSync) for c in commands)  # retried later, not now
        h.core.tick(10.0 + attempt)
        h.take()
    assert h.core.held(CID) == []  # given up after a few stalled syncs


def test_delivered_is_batched_and_cumulative() -> None:
    h = Harness()
    h.online(sync=result([]))
    h.take()
    h.core.message_received(1.0, msg(1))
    h.core.message_received(1.0, msg(2))
    commands, _ = h.take()
    assert not any(isinstance(c, SendDelivered) for c in commands)
    h.core.message_received(1.1, msg(3))  # batch of 3 reached
    commands, _ = h.take()
    assert [c for c in commands if isinstance(c, SendDelivered)] == [SendDelivered(CID, 3)]
    h.core.message_received(2.0, msg(4))
    assert h.core.next_deadline() == pytest.approx(2.5)
    h.core.tick(2.5)
    commands, _ = h.take()
    assert [c for c in commands if isinstance(c, SendDelivered)] == [SendDelivered(CID, 4)]


def test_cursors_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "client.db")
    first = Harness(path)
    first.online(sync=result([msg(1), msg(2)]))
    first.close()
    second = Harness(path)
    second.core.start(0.0)
    second.core.connected(0.0, welcome())
    syncs = [c for c in second.take()[0] if isinstance(c, RequestSync)]
    assert syncs == [RequestSync({CID: 2})]  # resync from the stored cursor
    second.close()


def test_wake_up_resyncs_when_online_and_reconnects_when_offline() -> None:
    h = Harness()
    h.online(sync=result([]))
    h.core.wake_up(1.0)
    assert any(isinstance(c, RequestSync) for c in h.take()[0])
    h.core.sync_completed(1.1, result([]))
    h.core.disconnected(2.0)
    h.take()
    h.core.wake_up(2.1)  # well before the backoff would have fired
    assert [type(c) for c in h.take()[0]] == [Connect]


# -- reconnect policy ---------------------------------------------------------------------


def test_backoff_grows_and_resets_after_a_stable_connection() -> None:
    h = Harness()
    h.core.start(0.0)
    now = 0.0
    delays = []
    for _ in range(4):
        h.core.connect_failed(now, "refused")
        offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
        delays.append(offline[-1].retry_in)
        now += 100
        h.core.tick(now)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    h.core.connected(now, welcome())
    h.core.disconnected(now + CONFIG.stable_after, "long session ended")
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 1.0  # reset


def test_server_hints_are_honoured() -> None:
    h = Harness()
    h.core.start(0.0)
    h.core.connect_failed(0.0, "503", retry_after=7.0)  # HTTP 503 Retry-After
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 7.0
    h.core.tick(7.0)
    h.core.connect_failed(7.0, "503", retry_after=3.0)
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 3.0  # it replaces the interval, not a floor under it
    h.core.tick(10.0)
    h.core.connect_failed(10.0, "503", retry_after=0.0)
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 1.0  # a zero Retry-After cannot make a tight loop
    h.core.tick(11.0)
    h.core.connect_failed(11.0, "connection refused")  # no hint from a server
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 1.0  # the 503s did not move the schedule on
    h.core.tick(12.0)
    h.core.connected(12.0, welcome())
    h.core.reconnect_requested(13.0, 2500, "draining")
    commands, _ = h.take()
    assert any(isinstance(c, Disconnect) for c in commands)
    h.core.disconnected(13.1)
    offline = [e for e in h.take()[1] if isinstance(e, ConnectionChanged) and e.retry_in]
    assert offline[-1].retry_in == 2.5  # the server's randomised delay, as given


def test_unauthorized_stops_reconnecting() -> None:
    h = Harness()
    h.core.start(0.0)
    h.core.connect_failed(0.0, "unauthorized", fatal=True)
    _, events = h.take()
    assert ConnectionChanged("stopped", None, "unauthorized") in events
    assert h.core.next_deadline() is None


# -- epochs -----------------------------------------------------------------------------


def test_epoch_change_marks_lost_messages_and_resends_own(tmp_path: Path) -> None:
    h = Harness(str(tmp_path / "client.db"), dataclasses.replace(CONFIG, epoch_verify_window=3))
    h.online(sync=result([msg(1), msg(2)]))
    own = h.core.send(1.0, CID, "mine")
    h.take()
    h.core.ack_received(1.1, ack(own, 3))
    h.core.message_received(1.2, msg(4))
    h.take()
    assert h.store.cursors() == {CID: 4}
    h.core.disconnected(2.0)
    h.core.tick(10.0)
    # The server was restored from a backup holding seqs 1..2; since then a
    # new message took seq 3.
    h.core.connected(10.0, welcome("e2"))
    commands, _ = h.take()
    verify = [c for c in commands if isinstance(c, RequestSync)]
    assert verify == [RequestSync({CID: 1})]  # cursor 4 minus the window of 3
    h.core.message_received(10.05, msg(4, mid="new4"))  # live, held back meanwhile
    h.core.sync_completed(10.1, result([msg(2), msg(3, mid="new3")], last={CID: 4}))
    commands, events = h.take()
    changed = [e for e in events if isinstance(e, EpochChanged)]
    assert len(changed) == 1
    assert changed[0].old_epoch == "e1"
    assert changed[0].new_epoch == "e2"
    (lost,) = changed[0].lost
    assert (lost.conversation_id, lost.first_seq, lost.last_seq) == (CID, 3, 4)
    assert lost.resent == (own,)
    assert transmits(commands) == [own]  # original client_msg_id
    # The server's new 3 and 4 are surfaced; the old ones are unconfirmed.
    assert surfaced(events) == [(CID, 3), (CID, 4)]
    assert [m.message_id for m in h.store.messages(CID)] == ["m1", "m2", "new3", "new4"]
    # Bob's old seq 4 came back as the new seq 4 (same client_msg_id: he
    # resent it), so only our own message is still unconfirmed.
    assert [m.client_msg_id for m in h.store.unconfirmed(CID)] == [own]
    assert h.store.epoch == "e2"
    # The resend lands as seq 5: it is confirmed again.
    h.core.ack_received(10.2, ack(own, 5))
    h.take()
    assert h.store.unconfirmed(CID) == []


def _restored_with_losses(h: Harness) -> tuple[str, list[Command], list[ResilientEvent]]:
    """Bob's 1, 2, our own 3, Bob's 4 and 5; then a restore to a backup
    holding 1..2. Returns our client_msg_id and what the finished check did."""
    h.online(sync=result([msg(1), msg(2)]))
    own = h.core.send(1.0, CID, "mine")
    h.take()
    h.core.ack_received(1.1, ack(own, 3))
    h.core.message_received(1.2, msg(4))
    h.core.message_received(1.3, msg(5))
    h.take()
    h.core.disconnected(2.0)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome("e2"))
    h.take()
    h.core.sync_completed(10.1, result([msg(1), msg(2)], last={CID: 2}))
    commands, events = h.take()
    return own, commands, events


def reconciles(commands: list[Command]) -> list[ReconcileRequest]:
    return [c.report for c in commands if isinstance(c, SendReconcile)]


def test_others_lost_messages_stay_as_not_on_server_and_are_reported() -> None:
    h = Harness()
    own, commands, events = _restored_with_losses(h)
    (changed,) = [e for e in events if isinstance(e, EpochChanged)]
    (lost,) = changed.lost
    assert (lost.first_seq, lost.last_seq, lost.resent) == (3, 5, (own,))
    assert lost.not_on_server == ("m4", "m5")
    # Ours goes back under its client_msg_id; Bob's are kept, never resent by us.
    assert transmits(commands) == [own]
    assert [m.message_id for m in h.store.not_on_server(CID)] == ["m4", "m5"]
    assert [m.sender_id for m in h.store.not_on_server()] == [BOB, BOB]
    assert [m.client_msg_id for m in h.store.unconfirmed(CID)] == [own, "cm-u-bob-4", "cm-u-bob-5"]
    # The report: the server's last_seq 2, we held up to 5, 1 ours and 2 Bob's.
    assert reconciles(commands) == [
        ReconcileRequest("e2", [ReconcileConversation(CID, 2, 5, 1, 2)])
    ]
    # Bob's device resends his 4: it arrives under a new seq and is on the server again.
    h.core.ack_received(10.2, ack(own, 3))
    h.core.message_received(10.3, Message(CID, 4, "new4", BOB, "cm-u-bob-4", 2000, {}))
    h.take()
    assert [m.message_id for m in h.store.not_on_server(CID)] == ["m5"]
    assert h.store.unconfirmed(CID) == h.store.not_on_server(CID)


def test_reconcile_is_sent_once_per_epoch_across_drops_and_restarts(tmp_path: Path) -> None:
    path = str(tmp_path / "client.db")
    h = Harness(path)
    _, commands, _ = _restored_with_losses(h)
    (report,) = reconciles(commands)
    # Not answered before the connection dropped: the next connection sends it.
    h.core.disconnected(11.0)
    h.core.tick(20.0)
    h.core.connected(20.0, welcome("e2"))
    assert reconciles(h.take()[0]) == [report]
    h.close()
    # Nor after a restart of the app, until the server has stored it.
    h = Harness(path)
    h.online(now=30.0, epoch="e2")
    assert reconciles(h.commands) == [report]
    h.core.reconcile_failed(30.5, "e2", "timeout", retryable=True)  # kept
    assert h.store.pending_reconcile() == report
    h.core.reconcile_sent(31.0, "e2")
    assert h.store.pending_reconcile() is None
    h.core.disconnected(32.0)
    h.core.tick(40.0)
    h.core.connected(40.0, welcome("e2"))
    assert reconciles(h.take()[0]) == []
    h.close()
    h = Harness(path)
    h.online(now=50.0, epoch="e2")
    assert reconciles(h.commands) == []
    h.close()


def test_a_refused_reconcile_is_dropped() -> None:
    h = Harness()
    _, commands, _ = _restored_with_losses(h)
    assert reconciles(commands)
    h.core.reconcile_failed(11.0, "e2", "not_member", retryable=False)
    assert h.store.pending_reconcile() is None


def test_an_epoch_change_without_losses_still_reports() -> None:
    h = Harness()
    h.online(sync=result([msg(1)]))
    h.core.disconnected(1.0)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome("e2"))
    h.take()
    h.core.sync_completed(10.1, result([msg(1)]))
    assert reconciles(h.take()[0]) == [ReconcileRequest("e2", [])]


def test_epoch_divergence_below_the_window_is_found() -> None:
    h = Harness()
    h.online(sync=result([msg(s) for s in range(1, 6)]))
    h.core.disconnected(1.0)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome("e2"))
    assert [c for c in h.take()[0] if isinstance(c, RequestSync)] == [RequestSync({CID: 3})]
    # The backup held only 1..2; 3..5 on the server now are other messages.
    new = [msg(s, mid=f"new{s}") for s in (3, 4, 5)]
    h.core.sync_completed(10.1, result([new[1], new[2]], last={CID: 5}))
    commands, _ = h.take()
    assert [c for c in commands if isinstance(c, RequestSync)] == [RequestSync({CID: 0})]
    h.core.sync_completed(10.2, result([msg(1), msg(2), *new], last={CID: 5}))
    _, events = h.take()
    (changed,) = [e for e in events if isinstance(e, EpochChanged)]
    assert [(r.first_seq, r.last_seq) for r in changed.lost] == [(3, 5)]
    assert [m.message_id for m in h.store.messages(CID)] == ["m1", "m2", "new3", "new4", "new5"]


def test_same_epoch_is_an_ordinary_reconnect() -> None:
    h = Harness()
    h.online(sync=result([msg(1)]))
    h.core.disconnected(1.0)
    h.core.tick(10.0)
    h.core.connected(10.0, welcome("e1"))
    commands, events = h.take()
    assert [c for c in commands if isinstance(c, RequestSync)] == [RequestSync({CID: 1})]
    assert not any(isinstance(e, EpochChanged) for e in events)


def test_own_messages_acked_before_a_conversation_is_known_are_kept() -> None:
    # Sends go out as soon as the connection is up, before the first sync has
    # told the store where a new conversation starts. The server moves this
    # device's cursor past its own messages as they are stored (it need not
    # be sent them), so the sync then says "starts after 3": the store must
    # still keep 1-3, which it holds from their acks.
    # The acks themselves are only held (the conversation has no cursor), and
    # a dropped connection drops what is held: the next sync must ask for them.
    h = Harness()
    h.core.start(0.0)
    cmids = [h.core.send(0.0, CID, f"early {i}") for i in range(3)]
    h.core.connected(1.0, welcome())
    commands, _ = h.take()
    assert transmits(commands) == cmids
    for seq, cmid in enumerate(cmids, start=1):
        h.core.ack_received(1.1, ack(cmid, seq))
    h.core.disconnected(1.2, "dropped")
    h.core.tick(5.0)
    h.core.connected(5.0, welcome())
    commands, _ = h.take()
    (sync,) = [c for c in commands if isinstance(c, RequestSync)]
    assert sync.cursors == {CID: 0}
    own = [msg(seq, sender=ME) for seq in (1, 2, 3)]
    h.core.sync_completed(5.1, result([*own, msg(4)], {CID: 4}, delivered=3))
    _, events = h.take()
    assert surfaced(events) == [(CID, 1), (CID, 2), (CID, 3), (CID, 4)]
    assert [m.seq for m in h.store.messages(CID)] == [1, 2, 3, 4]


def test_own_messages_whose_acks_were_lost_are_kept_in_a_new_conversation() -> None:
    # Stored, but the connection dropped before the acks: the first sync says
    # "starts after 3" while the sends still wait for their acks. The store
    # must not start the conversation until their seqs are known.
    h = Harness()
    h.core.start(0.0)
    cmids = [h.core.send(0.0, CID, f"early {i}") for i in range(3)]
    h.core.connected(1.0, welcome())
    h.take()
    h.core.disconnected(1.2, "dropped")
    h.core.tick(5.0)
    h.core.connected(5.0, welcome())
    commands, _ = h.take()
    assert transmits(commands) == cmids  # sent again, same ids
    h.core.sync_completed(5.1, result([], {CID: 3}, delivered=3))
    assert h.store.messages(CID) == []
    for seq, cmid in enumerate(cmids, start=1):
        h.core.ack_received(5.2, ack(cmid, seq, duplicate=True))
    commands, _ = h.take()
    (sync,) = [c for c in commands if isinstance(c, RequestSync)]
    assert sync.cursors == {CID: 0}
    own = [msg(seq, sender=ME) for seq in (1, 2, 3)]
    h.core.sync_completed(5.3, result([*own, msg(4)], {CID: 4}, delivered=3))
    assert [m.seq for m in h.store.messages(CID)] == [1, 2, 3, 4]
