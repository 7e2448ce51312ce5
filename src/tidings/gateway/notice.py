"""The ``restored`` notice every session gets after ``welcome`` for a while
after a restore from backup (docs/reliability.md, "Disaster recovery").

The node reads the latest restore once, when it starts (a restore needs the
server stopped, so it cannot change while the node runs), and encodes the
frame then: a session pays one clock comparison for it, never a store query.
"""

from __future__ import annotations

import datetime as dt

from tidings.core.frames import Notice, encode
from tidings.core.models import Restore

RESTORED = "restored"


def _utc(ts_ms: int) -> str:
    when = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def restored_text(restore: Restore) -> str:
    """The sentence an app can show as it is."""
    return (
        f"Messages sent between {_utc(restore.from_ts)} and {_utc(restore.to_ts)} (UTC)"
        " may have been lost."
    )


class RestoreNotice:
    """The encoded ``notice`` frame of one restore and until when it is sent."""

    def __init__(self, restore: Restore, period_s: int) -> None:
        self.until_ms = restore.to_ts + period_s * 1000
        notice = Notice(RESTORED, restore.from_ts, restore.to_ts, restored_text(restore))
        self.frame = encode(notice)

    def frame_at(self, now_ms: int) -> bytes | None:
        """The frame to send a session opened at ``now_ms``, or ``None`` after the period."""
        return self.frame if now_ms < self.until_ms else None
