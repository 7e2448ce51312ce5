"""Opaque, time-ordered identifiers.

Ids sort roughly by creation time (48-bit milliseconds, then 80 random bits)
so that B-tree inserts stay local, and carry a short prefix naming their kind
(``u_`` user, ``d_`` device, ``c_`` conversation, ``m_`` message) so that a log
line or a support ticket says what an id is without a lookup.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return ``prefix_`` followed by 26 base32 characters (128 bits, time first)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32((ms << 80) | rand, 26)}"


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch (the protocol's timestamps)."""
    return time.time_ns() // 1_000_000
