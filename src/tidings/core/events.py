"""Events that travel between nodes on the bus.

A node that persists a message publishes one :class:`MessageEvent` carrying the
``msg`` frame already encoded, so that every node writes the same bytes to its
local recipients without re-encoding (serialise once per message, not per
recipient). Events are msgspec-encoded so the in-process bus and a networked
bus carry exactly the same payloads.
"""

from __future__ import annotations

import msgspec


class MessageEvent(msgspec.Struct, tag="message", frozen=True):
    conversation_id: str
    seq: int
    sender_id: str
    origin_session: str  # the sender's connection gets an ack, not this msg
    frame: bytes  # the encoded ``msg`` frame
    membership_changed: bool = False
    extra_recipients: list[str] = []  # removed members still see their removal
    added: list[str] = []


class ReceiptEvent(msgspec.Struct, tag="receipt", frozen=True):
    conversation_id: str
    user_id: str
    delivered_seq: int
    read_seq: int


class JoinedEvent(msgspec.Struct, tag="joined", frozen=True):
    """Published on a user's topic when they join a conversation, so that the
    nodes holding their connections start listening to it."""

    conversation_id: str
    user_id: str
    after_seq: int = 0  # the stream's seq before the join; live messages follow it


class RevokedEvent(msgspec.Struct, tag="revoked", frozen=True):
    """Published on a user's topic when a device logs out: the nodes holding
    its connections close them, so a revoked token stops working at once."""

    user_id: str
    device_id: str


class DisabledEvent(msgspec.Struct, tag="disabled", frozen=True):
    """Published on a user's topic when their account is disabled (its tokens
    are revoked in the same transaction): the nodes holding the user's
    connections close every one of them, as they close a logged-out device's."""

    user_id: str


class SignedOutEvent(msgspec.Struct, tag="signed_out", frozen=True):
    """Published on a user's topic when every token of theirs was revoked
    (an operator's password reset): every node closes the user's sessions."""

    user_id: str


class TypingEvent(msgspec.Struct, tag="typing", frozen=True):
    """A typing indicator, relayed live and never stored: a node that misses it
    (or a client that reconnects) gets only what is live now, from presence."""

    conversation_id: str
    user_id: str
    state: str
    expires_ms: int


class UserFrameEvent(msgspec.Struct, tag="user_frame", frozen=True):
    """A frame for every live session of one user, on all nodes: how a change
    of the user's own state (hidden messages, conversation settings) reaches
    their other devices at once. ``frame`` is the encoded JSON frame."""

    user_id: str
    frame: bytes


BusEvent = (
    MessageEvent
    | ReceiptEvent
    | JoinedEvent
    | RevokedEvent
    | DisabledEvent
    | SignedOutEvent
    | TypingEvent
    | UserFrameEvent
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusEvent)


def encode_event(event: BusEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(payload: bytes) -> BusEvent:
    result: BusEvent = _decoder.decode(payload)
    return result


def conversation_topic(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def user_topic(user_id: str) -> str:
    return f"user:{user_id}"
