"""Web Push (RFC 8030) requests: the payload encrypted to the subscription's
keys (RFC 8291, ``aes128gcm``, by pywebpush) and signed for the push service
with the node's VAPID key (RFC 8292, by py_vapid).

The VAPID key is made once and kept in the store (``push_vapid``), so every
node signs with the same key and browsers' subscriptions, which are bound to
it, survive restarts; an operator may give one instead (``vapid_key_file``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException
from yarl import URL

from tidings.core.errors import ErrorCode, TidingsError
from tidings.features.push.port import PushStore, Subscription

VAPID_LIFETIME_S = 12 * 3600
"""How long a signature is valid (RFC 8292 allows at most 24 hours)."""


def new_private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def private_pem(store: PushStore, key_file: str) -> str:
    """The operator's key file, else the store's key (made by the first node)."""
    if key_file:
        return await asyncio.to_thread(Path(key_file).read_text)
    return await store.vapid_key(new_private_pem())


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check_keys(p256dh: str, auth: str) -> None:
    """``bad_request`` unless the keys are what a browser's PushSubscription gives."""
    try:
        point = base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))
        secret = base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4))
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise TidingsError(
            ErrorCode.BAD_REQUEST, "keys.p256dh is not a P-256 public key (base64url)"
        ) from None
    if len(secret) != 16:
        raise TidingsError(ErrorCode.BAD_REQUEST, "keys.auth must be 16 bytes (base64url)")


class Signer:
    """The node's VAPID identity: signs requests, and tells browsers its public key.
    Loaded at start (``load``), from the key file or the store."""

    def __init__(self, subject: str) -> None:
        self._subject = subject
        self._vapid: Vapid02 | None = None
        self._public_key = ""
        self._signed: dict[str, tuple[float, str]] = {}

    def load(self, private_pem: str) -> None:
        self._vapid = Vapid02.from_pem(private_pem.encode())
        point = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._public_key = b64url(point)
        self._signed.clear()

    async def ready(self) -> None:
        """The readiness probe: answers once the key is loaded."""
        if self._vapid is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "push is starting")

    @property
    def public_key(self) -> str:
        """The ``applicationServerKey`` a browser subscribes with."""
        if not self._public_key:
            raise TidingsError(ErrorCode.UNAVAILABLE, "push is starting")
        return self._public_key

    def authorization(self, endpoint: str) -> str:
        """The ``Authorization`` header for a push service, reused until near expiry."""
        if self._vapid is None:
            raise TidingsError(ErrorCode.UNAVAILABLE, "push is starting")
        url = URL(endpoint)
        port = url.explicit_port
        audience = f"{url.scheme}://{url.raw_host}" + ("" if port is None else f":{port}")
        now = time.time()
        cached = self._signed.get(audience)
        if cached is not None and cached[0] > now + 60:
            return cached[1]
        expires = int(now) + VAPID_LIFETIME_S
        header = self._vapid.sign({"aud": audience, "exp": expires, "sub": self._subject})
        value = str(header["Authorization"])
        self._signed[audience] = (expires, value)
        return value


def encrypt(subscription: Subscription, payload: bytes) -> bytes:
    """The RFC 8291 ``aes128gcm`` body for the subscription's browser."""
    info = {
        "endpoint": subscription.url,
        "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
    }
    try:
        return bytes(WebPusher(info).encode(payload, "aes128gcm")["body"])
    except WebPushException as exc:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"web push keys: {exc}") from None


def topic(conversation_id: str) -> str:
    """RFC 8030 ``Topic``: a push service keeps only the latest notification of
    a conversation for an offline browser (at most 32 base64url characters)."""
    return b64url(hashlib.sha256(conversation_id.encode()).digest()[:24])
