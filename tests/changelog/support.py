"""A recording worker and the helpers the change-log tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.store.support import WAIT_S, make_device, make_user, text
from tidings.changelog.runner import ChangeRunner, RunnerOptions
from tidings.core.models import Change, ChangeBatch, ConversationKind, Message
from tidings.core.ports.store.composite import Store

NOW = 1_700_000_000_000
FAST = RunnerOptions(
    batch_size=7, catchup_batch_size=7, poll_s=0.02, lease_ms=60_000, retry_max_s=0.1
)
"""Runner options that keep the tests short: the backoff still doubles, up to 0.1 s."""


class Recorder:
    """A worker that records every change it is handed, and when.

    ``interrupt(handled)`` runs before each change with the count recorded so
    far; it may raise (a failing handler) or block (a batch cut short).
    ``busy`` counts handlers running at once over every recorder sharing it.
    """

    def __init__(
        self,
        name: str = "search",
        interrupt: Callable[[int], object] | None = None,
        busy: list[int] | None = None,
    ) -> None:
        self.name = name
        self.changes: list[Change] = []
        self.batch_sizes: list[int] = []
        self.first_handled_at: float | None = None
        self._interrupt = interrupt
        self._busy = busy if busy is not None else [0, 0]  # [now, most]

    async def handle(self, batch: ChangeBatch) -> None:
        self.batch_sizes.append(len(batch.changes))
        self._busy[0] += 1
        self._busy[1] = max(self._busy)
        try:
            for change in batch.changes:
                if self._interrupt is not None:
                    blocker = self._interrupt(len(self.changes))
                    if isinstance(blocker, asyncio.Event):
                        await blocker.wait()
                if self.first_handled_at is None:
                    self.first_handled_at = time.monotonic()
                self.changes.append(change)
                await asyncio.sleep(0)  # let others run mid-batch
        finally:
            self._busy[0] -= 1

    def message_ids(self) -> set[str]:
        return {c.message.message_id for c in self.changes}


async def send(store: Store, count: int) -> list[Message]:
    """``count`` messages spread over two conversations (alternating)."""
    alice = await make_user(store, f"alice{NOW}-{count}-{time.monotonic_ns()}")
    bob = await make_user(store, f"bob{NOW}-{count}-{time.monotonic_ns()}")
    device = await make_device(store, alice)
    convs = [
        (
            await store.create_conversation(
                ConversationKind.GROUP, alice.user_id, [bob.user_id], f"g{i}", NOW
            )
        )[0]
        for i in range(2)
    ]
    sent: list[Message] = []
    for i in range(count):
        cid = convs[i % 2].conversation_id
        key = f"{cid}-{i}"
        sent.append((await store.append(text(cid, alice, device, key))).message)
    return sent


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded by ``WAIT_S``) until ``condition()`` holds."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def crash(runner: ChangeRunner) -> None:
    """End a runner as a killed process would: its task stops wherever it is
    and its lease is never released (it has to expire)."""
    task = runner._task
    assert task is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def in_seq_order_per_conversation(changes: list[Change]) -> bool:
    """Whether the first sighting of each message comes in seq order within
    its conversation (re-deliveries after a failure may repeat earlier ones)."""
    last: dict[str, int] = {}
    seen: set[str] = set()
    for change in changes:
        message = change.message
        if message.message_id in seen:
            continue
        seen.add(message.message_id)
        if message.seq != last.get(message.conversation_id, 0) + 1:
            return False
        last[message.conversation_id] = message.seq
    return True
