"""The few frames the load generator writes and reads, as msgspec structs.

The generator does not use the SDK: at tens of thousands of frames a second on
a 2-core machine that it shares with the server, every microsecond it spends
is taken from the server being measured. It decodes each incoming frame once
into one flat struct and reads only the fields it needs.
"""

from __future__ import annotations

import msgspec


class Probe(msgspec.Struct, frozen=True):
    """Message content: a text plus the message index and its send time (ns, wall clock).

    Sender and receivers run on the same machine, so the send time embedded in
    the content and the receive time taken by the receiver share one clock.
    """

    text: str
    i: int
    t: int


class InFrame(msgspec.Struct, frozen=True):
    """Any server frame, flattened; unknown fields (and frame types) are ignored."""

    type: str
    conversation_id: str | None = None
    seq: int = 0
    client_msg_id: str | None = None
    content: Probe | None = None
    code: str | None = None
    heartbeat_ms: int = 0


class Hello(msgspec.Struct, tag="hello", tag_field="type"):
    token: str


class Join(msgspec.Struct, tag="join", tag_field="type"):
    room: str


class Send(msgspec.Struct, tag="send", tag_field="type"):
    conversation_id: str
    client_msg_id: str
    content: Probe


class Delivered(msgspec.Struct, tag="delivered", tag_field="type"):
    conversation_id: str
    seq: int


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    id: str


decode_frame = msgspec.json.Decoder(InFrame).decode
encode_frame = msgspec.json.Encoder().encode
