"""Rules every store applies the same way, kept out of the engines.

Backends differ in how they write; what a request means must not differ, so
the checks that need no database live here and both engines call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import Change, ChangeBatch, ConversationKind, ReconcileReport, Role


class NewConversation(NamedTuple):
    others: list[str]
    """The other members, deduplicated in the order given (the creator is implicit)."""
    direct_key: str | None
    """``min(uid)|max(uid)`` of a direct conversation: unique per pair whatever the order."""
    creator_role: Role


def new_conversation(
    kind: ConversationKind, creator_id: str, member_ids: Sequence[str]
) -> NewConversation:
    """Validate and normalise the members of a conversation being created."""
    others = [uid for uid in dict.fromkeys(member_ids) if uid != creator_id]
    direct_key: str | None = None
    if kind is ConversationKind.DIRECT:
        if len(others) != 1:
            raise TidingsError(
                ErrorCode.BAD_REQUEST, "a direct conversation has exactly one other member"
            )
        direct_key = "|".join(sorted((creator_id, others[0])))
    creator_role = Role.ADMIN if kind is ConversationKind.GROUP else Role.MEMBER
    return NewConversation(others, direct_key, creator_role)


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
