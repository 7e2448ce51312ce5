"""The event loop an object serves, looked up once.

``asyncio.get_running_loop()`` makes a ``getpid()`` system call on every call
in CPython 3.11 (to notice a fork). Called per frame on the gateway's paths it
took 6.6% of the event loop's thread in the throughput benchmark (py-spy,
native frames), so objects that live on one loop ask once and keep it.
"""

from __future__ import annotations

import asyncio


class LoopRef:
    """The running loop, as of the first :meth:`get` (always from that loop)."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop
