"""Rules every store applies the same way, kept out of the engines.

Backends differ in how they write; what a request means must not differ, so
the checks that need no database live here and both engines call them (the
members of a new conversation are the core's rule: ``core/conversations.py``).
"""

from __future__ import annotations

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import ReconcileReport


def report_conversations(report: ReconcileReport) -> list[str]:
    """The conversations a reconcile report names; each at most once (a
    report has one figure per conversation, and a repeat would be ambiguous)."""
    cids = [gap.conversation_id for gap in report.gaps]
    if len(set(cids)) != len(cids):
        raise TidingsError(ErrorCode.BAD_REQUEST, "a conversation is reported twice")
    return cids
