"""The tracer: which messages it samples, and what it keeps when the store
falls behind. No timing: only counts and deterministic hashes."""

from __future__ import annotations

from tidings.core.models import Device, Message
from tidings.core.trace import SendStamps, Tracer

DEVICE = Device("d_1", "u_1", "phone", 0)


def _message(seq: int) -> Message:
    return Message("c_1", seq, f"m_{seq}", "u_1", f"k{seq}", 0, b"{}")


def test_off_until_enabled_and_records_nothing() -> None:
    tracer = Tracer()
    assert not tracer.on
    assert not tracer.sampled("c_1", 1)
    assert not tracer.sampled_range("c_1", 1, 100)
    tracer.enable("n", 0.0, 10)
    assert not tracer.on


def test_every_node_samples_the_same_messages_at_about_the_rate() -> None:
    one, other = Tracer(), Tracer()
    one.enable("n1", 0.1, 10)
    other.enable("n2", 0.1, 10)
    keys = [(f"c_{c}", seq) for c in range(20) for seq in range(1, 501)]
    picked = [key for key in keys if one.sampled(*key)]
    assert picked == [key for key in keys if other.sampled(*key)]
    assert 0.08 < len(picked) / len(keys) < 0.12
    everything = Tracer()
    everything.enable("n", 1.0, 10)
    assert all(everything.sampled(*key) for key in keys)


def test_a_cursor_move_is_recorded_when_it_covers_a_sampled_message() -> None:
    tracer = Tracer()
    tracer.enable("n", 0.1, 10)
    seqs = [seq for seq in range(1, 200) if tracer.sampled("c_r", seq)]
    first = seqs[0]
    assert tracer.sampled_range("c_r", first, first)
    assert tracer.sampled_range("c_r", 1, first)
    if first > 1:
        assert not tracer.sampled_range("c_r", 1, first - 1)
    assert tracer.sampled_range("c_r", 1000, 1064)  # too long to look at: assumed


def test_a_full_buffer_drops_and_counts_instead_of_growing() -> None:
    tracer = Tracer()
    tracer.enable("n", 1.0, 3)
    stamps = SendStamps(1.0)
    for seq in range(5):
        tracer.sent(_message(seq), DEVICE, "wifi", stamps)
    assert tracer.dropped == 2
    taken = tracer.take()
    assert [row[1] for row in taken] == [0, 1, 2]
    assert taken[0][4] == "n"
    assert taken[0][10] is None  # never persisted: the stage is absent
    assert tracer.take() == []
    tracer.delivered("c_1", 9, [("u_2", "d_2", "cellular")], "delivered")
    (row,) = tracer.take()
    assert row[13] == '[["u_2","d_2","cellular"]]'
    assert len(row) == 15
