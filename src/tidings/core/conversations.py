"""Who a new conversation is between: the one statement of that rule.

The chat service applies it before asking anything of the store, and every
store applies it again while it writes (the store contract promises that a
direct conversation is unique per pair, which needs the pair), so both call
this function and the rule cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import ConversationKind, Role


class NewConversation(NamedTuple):
    others: list[str]
    """The other members, deduplicated in the order given (the creator is implicit)."""
    direct_key: str | None
    """``min(uid)|max(uid)`` of a direct conversation: unique per pair whatever the order."""
    creator_role: Role


def new_conversation(
    kind: ConversationKind, creator_id: str, member_ids: Sequence[str]
) -> NewConversation:
    """Validate and normalise the members of a conversation being created: a
    direct conversation has exactly one other member; a group's creator is its admin."""
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
