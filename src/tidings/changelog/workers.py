"""A node's change-log workers, started and stopped with the node."""

from __future__ import annotations

import asyncio
import os
import socket

from tidings.changelog.runner import ChangeRunner, ChangeSource, RunnerOptions
from tidings.core.ids import new_id
from tidings.core.workers import ChangeWorker
from tidings.observability.metrics import Metrics


def holder_id() -> str:
    """This process's name in the lease rows: host and pid tell an operator
    which node is active; the random part tells two runs of one pid apart."""
    return f"{socket.gethostname()}/{os.getpid()}/{new_id('h')}"


class ChangeWorkers:
    """The runners of the workers registered with one node; with none
    registered, starting and stopping do nothing."""

    def __init__(
        self,
        store: ChangeSource,
        metrics: Metrics,
        options: RunnerOptions,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._options = options
        self.holder = holder or holder_id()
        self._runners: dict[str, ChangeRunner] = {}
        self._started = False

    def register(self, worker: ChangeWorker) -> ChangeRunner:
        """Add a worker (started at once if the node already runs)."""
        if worker.name in self._runners:
            raise ValueError(f"a change-log worker named {worker.name!r} is already registered")
        runner = ChangeRunner(self._store, worker, self._metrics, self._options, self.holder)
        self._runners[worker.name] = runner
        if self._started:
            runner.start()
        return runner

    def start(self) -> None:
        self._started = True
        for runner in self._runners.values():
            runner.start()

    async def stop(self) -> None:
        """Stop every runner (each releases its lease); run before the store closes."""
        self._started = False
        await asyncio.gather(*(runner.stop() for runner in self._runners.values()))
