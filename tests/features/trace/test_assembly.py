"""From stored rows to a lifecycle: expansion, the first covering cursor move
per device or user, and time order."""

from __future__ import annotations

from tidings.features.trace.lifecycle import lifecycle
from tidings.features.trace.port import TraceRow


def _row(seq: int, stage: str, ts_us: int, node: str = "n1", **more: object) -> TraceRow:
    fields: dict[str, object] = dict.fromkeys(TraceRow._fields)
    fields.update(conversation_id="c_1", seq=seq, stage=stage, ts_us=ts_us, node=node)
    fields.update(more)
    return TraceRow(**fields)  # type: ignore[arg-type]


def test_rows_become_stages_and_only_the_first_cover_counts() -> None:
    rows = [
        _row(
            5,
            "send",
            1000,
            user_id="u_a",
            device_id="d_a",
            network="wifi",
            message_id="m_5",
            persisted_us=3000,
            published_us=4000,
            acked_us=4500,
        ),
        _row(5, "delivered", 3999, node="n2", devices='[["u_b","d_b","cellular"]]'),
        _row(6, "client_acked", 9000, node="n2", user_id="u_b", device_id="d_b"),
        _row(7, "client_acked", 9500, node="n2", user_id="u_b", device_id="d_b"),
        _row(7, "read", 9800, node="n2", user_id="u_b", device_id="d_b"),
    ]
    stages = lifecycle(rows, 5)
    assert [(s.stage, s.node) for s in stages] == [
        ("received", "n1"),
        ("persisted", "n1"),
        ("delivered", "n2"),
        ("published", "n1"),
        ("acked", "n1"),
        ("client_acked", "n2"),
        ("read", "n2"),
    ]
    assert all(s.seq == 5 and s.message_id == "m_5" for s in stages)
    assert stages[-2].ts_us == 9000  # the first delivered that covered seq 5
    assert stages[2].device_id == "d_b"
    assert stages[2].via == "live"
    assert stages[0].ts == 1


def test_stages_in_one_microsecond_keep_their_order() -> None:
    rows = [_row(1, "send", 10, message_id="m_1", persisted_us=10, published_us=10, acked_us=10)]
    assert [s.stage for s in lifecycle(rows, 1)] == ["received", "persisted", "published", "acked"]
