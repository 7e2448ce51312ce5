"""The event loop an object serves, looked up once; stopping a background task.

``asyncio.get_running_loop()`` makes a ``getpid()`` system call on every call
in CPython 3.11 (to notice a fork). Called per frame on the gateway's paths,
that system call showed up in profiles of the event loop's thread as a cost
of its own, so objects that live on one loop ask once and keep it
(docs/benchmarks.md, "Scale targets, re-measured 2026-12-02 04:00-04:12 UTC",
"What changed, and what it measured" has the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


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


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (None: none was started) and wait until it has
    ended, so that nothing it does outlives the object that stops it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
