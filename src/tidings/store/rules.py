"""Rules every store applies the same way, kept out of the engines.

Backends differ in how they write; what a request means must not differ, so
the checks that need no database live here and both engines call them (the
members of a new conversation are the core's rule: ``core/conversations.py``).
"""

from __future__ import annotations

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import Change, ChangeBatch, ReconcileReport


def report_conversations(report: ReconcileReport) -> list[str]:
    """The conversations a reconcile report names; each at most once (a
    report has one figure per conversation, and a repeat would be ambiguous)."""
    cids = [gap.conversation_id for gap in report.gaps]
    if len(set(cids)) != len(cids):
        raise TidingsError(ErrorCode.BAD_REQUEST, "a conversation is reported twice")
    return cids


def change_batch(position: int, limit: int, changes: list[Change], head: int) -> ChangeBatch:
    """The page of changes read after ``position`` (at most ``limit``, none above
    ``head``, every position up to ``head`` committed), with where to resume:
    after a full page its last position, else ``head`` itself, since nothing
    up to it is left to read; never back."""
    if limit <= 0:
        resume = position
    elif len(changes) == limit:
        resume = changes[-1].position
    else:
        resume = max(position, head)
    return ChangeBatch(changes, resume, head)


def mentions_field(mentions: tuple[str, ...]) -> str | None:
    """How both engines store whom an entry mentions: ``" u1 u2 "`` (each id
    padded by spaces, so that "mentions u1" is a substring test that cannot
    match inside a longer id), ``*`` for everyone; None for nobody, which
    keeps a plain text's row as small as before."""
    if not mentions:
        return None
    ids = list(dict.fromkeys(mentions))
    if any(not i or any(c.isspace() for c in i) for i in ids):
        raise TidingsError(ErrorCode.BAD_REQUEST, "a mentioned id is empty or has a space")
    return f" {' '.join(ids)} "
