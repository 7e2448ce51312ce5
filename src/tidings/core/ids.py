"""Opaque, time-ordered identifiers.

Ids sort roughly by creation time (48-bit milliseconds, then 80 random bits)
so that B-tree inserts stay local, and carry a short prefix naming their kind
(``u_`` user, ``d_`` device, ``c_`` conversation, ``m_`` message) so that a log
line or a support ticket says what an id is without a lookup.

Ids are not secrets (bearer tokens are, and come from :mod:`secrets`), so the
random part uses the fast non-cryptographic generator: an id is minted for
every message on the hot path.
"""

from __future__ import annotations

import random
import time


def new_id(prefix: str) -> str:
    """Return ``prefix_`` and 32 hex digits (128 bits, time first, so ids sort by age)."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(80)
    return f"{prefix}_{ms:012x}{rand:020x}"


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch (the protocol's timestamps)."""
    return time.time_ns() // 1_000_000
