"""The push feature's storage: subscriptions, preferences, the notification
state of each (subscription, conversation) and the VAPID key.

Contracts (``tests/features/push/test_store.py`` runs them on both engines):

- ``note_messages`` is idempotent: a change-log batch handled twice (the
  runner's at-least-once) leaves the state as handling it once did, because a
  message is counted only when its seq is above everything already pending or
  notified for that (subscription, conversation).
- ``claim_due`` hands each waiting notification to one caller: it moves
  ``notified_seq`` to the pending seq in the same transaction that selects it
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the one writer on SQLite), so two
  dispatchers never send the same one. What the device already acknowledged
  or the user already read is claimed and dropped in that transaction.
- ``retry_later`` puts a failed claim back (its count merged with what came
  since); ``remove_subscription`` drops the subscription and its state.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, Protocol

import msgspec

SubscriptionKind = Literal["webpush", "webhook"]


class Subscription(msgspec.Struct, frozen=True):
    subscription_id: str
    user_id: str
    device_id: str
    kind: SubscriptionKind
    url: str
    p256dh: str | None = None
    auth: str | None = None
    secret: str | None = None
    created_at: int = 0


class Noted(msgspec.Struct, frozen=True):
    """A message that may notify the members of its conversation (bar its sender)."""

    conversation_id: str
    seq: int
    sender_id: str
    ts: int
    mentions: frozenset[str]
    mention_all: bool


class Claimed(msgspec.Struct, frozen=True):
    """A notification claimed for sending: ``seq`` is the latest message it covers,
    ``count`` how many messages it collapses, ``since`` when the first arrived."""

    subscription: Subscription
    conversation_id: str
    seq: int
    count: int
    mention: bool
    since: int
    attempts: int


class Claims(msgspec.Struct, frozen=True):
    """What one ``claim_due`` took: notifications to send, and how many it dropped
    because the device had acknowledged, or the user read, what they covered."""

    send: list[Claimed]
    dropped: int


class PushStore(Protocol):
    async def add_subscription(self, subscription: Subscription, limit: int) -> Subscription:
        """Store it; the device's existing subscription with the same URL is
        replaced (a browser re-subscribing). ``CONFLICT`` when the device has
        ``limit`` subscriptions already."""
        ...

    async def subscriptions(self, user_id: str, device_id: str | None) -> list[Subscription]:
        """The user's subscriptions (of one device when given), oldest first."""
        ...

    async def remove_subscription(self, subscription_id: str, user_id: str | None) -> bool:
        """Drop it (only if it is ``user_id``'s, when given) and its state."""
        ...

    async def without_previews(self, user_ids: Collection[str]) -> set[str]:
        """Those of the users who turned previews off (the default is on)."""
        ...

    async def set_previews(self, user_id: str, previews: bool) -> None: ...

    async def subscribed(self, conversation_ids: Sequence[str]) -> set[str]:
        """Which of the conversations have a member with a subscription: a read,
        so that messages nobody could be notified of cost the writer nothing."""
        ...

    async def note_messages(self, messages: Sequence[Noted], delay_ms: int, now: int) -> int:
        """Record, for every subscription of every other member (of a device not
        signed out; a member who muted the conversation only when mentioned),
        that ``messages`` wait to be notified, due ``delay_ms`` after the first
        one waiting arrived. Returns the (subscription, message) pairs counted."""
        ...

    async def next_due(self) -> int | None:
        """When the earliest waiting notification is due (None: none waits); a
        read, so an idle dispatcher costs the SQLite writer nothing."""
        ...

    async def claim_due(self, now: int, limit: int) -> Claims:
        """Claim up to ``limit`` notifications due at ``now``, oldest due first."""
        ...

    async def retry_later(self, claimed: Claimed, due_at: int) -> None:
        """Undo the claim of a notification whose send failed, due again at ``due_at``."""
        ...

    async def vapid_key(self, make: str) -> str:
        """The stored VAPID private key (PEM); ``make`` is stored if there is none."""
        ...
