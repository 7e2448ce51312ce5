"""Server-to-client WebSocket frames, built once and written to many sockets.

Frames from a server are not masked (RFC 6455, 5.1), so the bytes of a text
frame depend only on its payload: a message fanned out to 1000 members is
encoded and framed once and the same ``bytes`` object is written to every
transport. Compression is off for the same reason (per-connection deflate
state would force a copy per recipient).
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final WebSocket text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + payload
    if n < 65536:
        return _LEN16.pack(_FIN_TEXT, 126, n) + payload
    return _LEN64.pack(_FIN_TEXT, 127, n) + payload
