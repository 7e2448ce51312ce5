"""A change-log worker in a process of its own, killed with SIGKILL mid-batch
and started again: every message is handled at least once, in seq order per
conversation, and the saved position reaches the head (lag 0).

The worker writes each change it handles to a file (flushed per line) and
then sleeps a little, so the kill lands inside a batch. The lease of the
killed process is never released; the second process takes over once it
expires, as another node would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from tests.changelog.support import send, until
from tests.store.support import WAIT_S
from tidings.store.sqlite import SqliteStore

BATCH = 10
LEASE_MS = 500

WORKER = """
import asyncio, json, sys
from tidings.changelog.runner import RunnerOptions
from tidings.changelog.workers import ChangeWorkers
from tidings.observability.metrics import Metrics
from tidings.store.sqlite import SqliteStore

class Journal:
    name = "journal"
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)
    async def handle(self, batch):
        for change in batch.changes:
            m = change.message
            self.out.write(json.dumps([m.conversation_id, m.seq, m.message_id]) + "\\n")
            await asyncio.sleep(0.02)

async def main(db, journal, holder):
    store = SqliteStore(db)
    await store.start()
    options = RunnerOptions(batch_size=BATCH, poll_s=0.02, lease_ms=LEASE_MS, retry_max_s=0.1)
    workers = ChangeWorkers(store, Metrics(), options, holder=holder)
    workers.register(Journal(journal))
    workers.start()
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:4]))
""".replace("BATCH", str(BATCH)).replace("LEASE_MS", str(LEASE_MS))


def _journal(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.endswith("]")]
    return [(str(cid), int(seq), str(mid)) for cid, seq, mid in entries]


async def _start(db: Path, journal: Path, holder: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, str(db), str(journal), holder
    )


async def test_a_worker_process_killed_mid_batch_resumes_and_misses_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tidings.db"
    store = SqliteStore(str(db))
    await store.start()
    try:
        sent = await send(store, 60)
        journal = tmp_path / "journal.jsonl"

        first = await _start(db, journal, "first")
        try:
            # Inside the third batch: two batches' positions saved, one in hand.
            await until(lambda: len(_journal(journal)) >= 2 * BATCH + 4, "a batch in hand")
        finally:
            first.send_signal(signal.SIGKILL)
            await asyncio.wait_for(first.wait(), WAIT_S)
        killed_at = len(_journal(journal))
        assert killed_at < len(sent)  # it died before the end
        assert await store.consumer_position("journal") > 0  # two batches saved

        sent += await send(store, 20)
        second = await _start(db, journal, "second")
        try:
            wanted = {m.message_id for m in sent}
            await until(
                lambda: wanted <= {entry[2] for entry in _journal(journal)}, "every message"
            )
            head = (await store.changes_after(0, 0)).head
            for _ in range(int(WAIT_S / 0.05)):  # the position saved after the last batch
                if await store.consumer_position("journal") == head:
                    break
                await asyncio.sleep(0.05)
            assert await store.consumer_position("journal") == head
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), WAIT_S)
    finally:
        await store.close()

    handled = _journal(journal)
    # The second process started from the saved position: the abandoned batch
    # comes again (at least once), nothing before the position does.
    assert len(handled) > len(sent)
    last: dict[str, int] = {}
    for run in (handled[:killed_at], handled[killed_at:]):
        last.clear()
        for cid, seq, _ in run:
            assert seq > last.get(cid, 0), (cid, seq, last.get(cid))
            last[cid] = seq
