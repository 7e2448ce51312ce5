"""Push notifications from the app's side: what a subscription looks like, what
a notification says, and checking a webhook's signature (for the bridge an
operator runs in front of FCM or APNs). The calls are on
:class:`~tidings_client.http.TidingsHTTP`."""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import msgspec


class PushSubscription(msgspec.Struct, frozen=True):
    """One of the user's subscriptions (secrets are never listed)."""

    subscription_id: str
    kind: Literal["webpush", "webhook"]
    device_id: str
    url: str
    created_at: int


class PushSubscribed(msgspec.Struct, frozen=True):
    """A new subscription; a webhook's ``secret`` is shown only here."""

    subscription_id: str
    secret: str | None = None


class PushSettings(msgspec.Struct, frozen=True):
    previews: bool


class Notification(msgspec.Struct, frozen=True, tag_field="type", tag="message"):
    """What a device is told: sync ``conversation_id`` from ``seq``'s neighbourhood."""

    conversation_id: str
    seq: int
    sender_id: str
    count: int
    mention: bool = False
    preview: str | None = None


class VapidKey(msgspec.Struct, frozen=True):
    public_key: str


class PushSubscriptions(msgspec.Struct, frozen=True):
    subscriptions: list[PushSubscription]


def verify_webhook(secret: str, body: bytes, signature: str | None) -> Notification | None:
    """The notification in a webhook request whose ``X-Tidings-Signature`` is
    ``signature``, or None if the signature does not match ``body`` (compared
    in constant time; check before trusting anything in the body)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if signature is None or not hmac.compare_digest(expected, signature):
        return None
    return msgspec.json.decode(body, type=Notification)
