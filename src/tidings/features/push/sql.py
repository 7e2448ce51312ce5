"""The statements both engines share, with ``{p1}``-style placeholders that each
backend fills with its own (``?`` on SQLite, ``$1`` on PostgreSQL).

The upsert is what makes ``note_messages`` idempotent (port.py): a message is
counted only when its seq is above both the pending and the notified seq of
that (subscription, conversation). A message that finds nothing pending starts
a new notification: count 1, due ``delay`` after it, attempts 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.features.push.port import Subscription

COLUMNS = "subscription_id, user_id, device_id, kind, url, p256dh, auth, secret, created_at"
"""``push_subscriptions``' columns in the order of :class:`Subscription`'s fields."""


def subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(*row)


NOTE = """
INSERT INTO push_state (subscription_id, conversation_id, pending_seq, pending_count,
                        pending_mention, pending_since, due_at)
SELECT s.subscription_id, m.conversation_id, {seq}, 1, {mention}, {ts}, {due}
FROM members m
JOIN push_subscriptions s ON s.user_id = m.user_id
JOIN devices d ON d.device_id = s.device_id AND d.revoked_at IS NULL
WHERE m.conversation_id = {cid} AND m.user_id <> {sender}
  AND (m.muted_until IS NULL
       OR (m.muted_until <> -1 AND m.muted_until <= {now})
       OR {mention})
ON CONFLICT (subscription_id, conversation_id) DO UPDATE SET
    pending_count = CASE WHEN push_state.pending_seq > push_state.notified_seq
                         THEN push_state.pending_count + 1 ELSE 1 END,
    pending_mention = CASE WHEN push_state.pending_seq > push_state.notified_seq
                           THEN push_state.pending_mention OR excluded.pending_mention
                           ELSE excluded.pending_mention END,
    pending_since = CASE WHEN push_state.pending_seq > push_state.notified_seq
                         THEN push_state.pending_since ELSE excluded.pending_since END,
    due_at = CASE WHEN push_state.pending_seq > push_state.notified_seq
                  THEN push_state.due_at ELSE excluded.due_at END,
    attempts = CASE WHEN push_state.pending_seq > push_state.notified_seq
                    THEN push_state.attempts ELSE 0 END,
    pending_seq = excluded.pending_seq
WHERE excluded.pending_seq > push_state.pending_seq
  AND excluded.pending_seq > push_state.notified_seq
"""

SUBSCRIBED = """
SELECT DISTINCT m.conversation_id FROM members m
WHERE m.conversation_id IN ({ids})
  AND EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.user_id = m.user_id)
"""

WITHOUT_PREVIEWS = "SELECT user_id FROM push_prefs WHERE NOT previews AND user_id IN ({ids})"

NEXT_DUE = "SELECT min(due_at) FROM push_state WHERE pending_seq > notified_seq"

DUE = """
SELECT ps.subscription_id, ps.conversation_id, ps.pending_seq, ps.pending_count,
       ps.pending_mention, ps.pending_since, ps.attempts,
       s.user_id, s.device_id, s.kind, s.url, s.p256dh, s.auth, s.secret, s.created_at,
       coalesce(dc.delivered_seq, 0) >= ps.pending_seq
           OR coalesce(m.read_seq, ps.pending_seq) >= ps.pending_seq AS seen
FROM push_state ps
JOIN push_subscriptions s ON s.subscription_id = ps.subscription_id
LEFT JOIN device_cursors dc
       ON dc.device_id = s.device_id AND dc.conversation_id = ps.conversation_id
LEFT JOIN members m ON m.conversation_id = ps.conversation_id AND m.user_id = s.user_id
WHERE ps.pending_seq > ps.notified_seq AND ps.due_at <= {now}
ORDER BY ps.due_at
LIMIT {limit}
"""
"""A member who left (no ``members`` row) counts as having seen everything."""

CLAIM = """
UPDATE push_state
SET sending_from = notified_seq, notified_seq = pending_seq,
    pending_count = 0, pending_mention = {false}
WHERE subscription_id = {sub} AND conversation_id = {cid} AND pending_seq = {seq}
"""

RETRY = """
UPDATE push_state
SET notified_seq = sending_from,
    pending_count = pending_count + {count},
    pending_mention = pending_mention OR {mention},
    pending_since = {since},
    due_at = {due},
    attempts = attempts + 1
WHERE subscription_id = {sub} AND conversation_id = {cid} AND notified_seq = {seq}
"""
"""Only while no later claim was made: a later notification supersedes this one."""
