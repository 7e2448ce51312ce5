"""``tidings restore report``: what the devices said after the latest restore.

After a restore every device compares its history with the server's and sends
a ``reconcile`` report (docs/protocol.md): per conversation, what it held
beyond the restored server's ``last_seq``. This sums them up per
conversation for ops review: whether anything was lost, how much, and whose.
Nothing here changes the store: Tidings does not rebuild lost messages from
client copies (docs/reliability.md, "Disaster recovery").
"""

from __future__ import annotations

import datetime as dt

import msgspec

from tidings.core.models import ReconcileReport, Restore
from tidings.core.ports.store.restores import RestoreStore


class ConversationLoss(msgspec.Struct, frozen=True):
    """One conversation over every device that reported it.

    ``largest_gap``: the most seqs any device held beyond the server's
    ``last_seq``. ``own``: messages that their senders' devices still had
    (and resent under their original client_msg_id), a user's devices
    counted once (the largest figure among them). ``others``: the most
    messages of other senders any one device held that the server lacks;
    they are lost unless their senders resend them.
    """

    conversation_id: str
    devices: int
    largest_gap: int
    own: int
    others: int


class RestoreReport(msgspec.Struct, frozen=True):
    """The latest restore, how many devices reported, and the losses they saw."""

    epoch: str
    previous_epoch: str
    from_ts: int
    to_ts: int
    devices_reporting: int
    conversations: list[ConversationLoss]


def summarise(restore: Restore, reports: list[ReconcileReport]) -> RestoreReport:
    """Fold the devices' reports into one row per conversation, largest gap first."""
    devices: dict[str, int] = {}
    gaps: dict[str, int] = {}
    others: dict[str, int] = {}
    own_by_user: dict[tuple[str, str], int] = {}
    for report in reports:
        for gap in report.gaps:
            cid = gap.conversation_id
            devices[cid] = devices.get(cid, 0) + 1
            gaps[cid] = max(gaps.get(cid, 0), gap.held_last_seq - gap.server_last_seq)
            others[cid] = max(others.get(cid, 0), gap.others)
            key = (cid, report.user_id)
            own_by_user[key] = max(own_by_user.get(key, 0), gap.own)
    own: dict[str, int] = {}
    for (cid, _), count in own_by_user.items():
        own[cid] = own.get(cid, 0) + count
    rows = [
        ConversationLoss(cid, count, max(gaps[cid], 0), own[cid], others[cid])
        for cid, count in devices.items()
    ]
    rows.sort(key=lambda row: (-row.largest_gap, row.conversation_id))
    return RestoreReport(
        restore.epoch,
        restore.previous_epoch,
        restore.from_ts,
        restore.to_ts,
        len(reports),
        rows,
    )


async def latest_restore_report(store: RestoreStore) -> RestoreReport | None:
    """The report for the latest restore; ``None`` if the store was never restored."""
    restore = await store.latest_restore()
    if restore is None:
        return None
    return summarise(restore, await store.reconcile_reports(restore.epoch))


def _utc(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_text(report: RestoreReport) -> str:
    """The report for a terminal."""
    lines = [
        f"restore to epoch {report.epoch} (was {report.previous_epoch})",
        f"messages sent between {_utc(report.from_ts)} and {_utc(report.to_ts)} may be lost",
        f"devices reporting: {report.devices_reporting}",
    ]
    if not report.conversations:
        lines.append("no device reported messages the server lacks")
        return "\n".join(lines)
    header = ("conversation", "devices", "largest_gap", "own", "others")
    table = [header] + [
        (r.conversation_id, str(r.devices), str(r.largest_gap), str(r.own), str(r.others))
        for r in report.conversations
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )
    return "\n".join(lines)
