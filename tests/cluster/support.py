"""Helpers of the cluster suite: nodes as ``tidings serve`` subprocesses, and
raw WebSocket peers that record every frame with the time it arrived.

A :class:`Cluster` owns one PostgreSQL database and one Redis key prefix (both
made by the ``cluster`` fixture); every node it starts gets the same two URLs
through ``TIDINGS_STORE``/``TIDINGS_BUS``/``TIDINGS_BUS_PREFIX``, which is all
it takes to form a cluster. Nodes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.procs import free_port
from tests.procs import node_env as shared_node_env
from tests.wire import POLL_S, WAIT_S, Account, Http, Raw

# A node imports, migrates-checks the store and connects to Redis in about a
# second on a quiet machine; a loaded 2-core CI box may take several.
READY_TIMEOUT_S = 30.0
# SIGTERM drains (reconnect frames, in-flight sends, close 1001): a node with
# no window configured still exits within a few seconds; then SIGKILL.
STOP_TIMEOUT_S = 15.0
# Readiness probes on a node whose backend is cut answer within the store's
# and bus's probe timeouts (~1 s for Redis, up to ~7 s for PostgreSQL).
PROBE_TIMEOUT_S = 10.0
# Peers send a cumulative ``delivered`` at most this often, as the SDK batches
# them; it keeps the server's redelivery (a legitimate duplicate) out of the
# exactly-once counts.
DELIVERED_EVERY_S = 0.3


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a cluster node: readable text logs on top of the shared one."""
    return shared_node_env(TIDINGS_LOG_FORMAT="text", **extra)


@dataclass
class NodeProc:
    """One ``tidings serve`` subprocess."""

    name: str
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL by PID: no drain, no goodbye."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM by PID: the node drains."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGTERM)

    async def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
        if self.running:
            self.terminate()
            try:
                await self.wait()
            except TimeoutError:
                self.kill()
        with contextlib.suppress(TimeoutError):
            await self.wait()


async def readyz(url: str) -> tuple[int, Any]:
    """GET /readyz with its own short-lived session: (status, body)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + "/readyz") as resp,
    ):
        body = await resp.read()
        return resp.status, (msgspec.json.decode(body) if body else None)


async def until_status(url: str, status: int, timeout: float) -> dict[str, Any]:
    """Poll /readyz (bounded) until it answers ``status``; its last body."""
    body: Any = None
    for _ in range(int(timeout / POLL_S) + 1):
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            got, body = await readyz(url)
            if got == status:
                result: dict[str, Any] = body
                return result
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{url}/readyz never answered {status}; last: {body}")


@dataclass
class Cluster:
    """The nodes of one test, over one database and one Redis prefix."""

    store: str
    bus: str
    prefix: str
    tmp: Path
    nodes: list[NodeProc] = field(default_factory=list)

    async def spawn(
        self,
        *,
        store: str | None = None,
        bus: str | None = None,
        ready: bool = True,
        port: int | None = None,
        **env: str,
    ) -> NodeProc:
        """Start a node (``store``/``bus`` override this cluster's URLs, e.g.
        to go through a fault proxy; ``port`` defaults to a free one) and wait
        until /readyz says 200."""
        index = len(self.nodes)
        name = f"node{index}"
        port = port or free_port()
        data = self.tmp / name
        data.mkdir(parents=True, exist_ok=True)
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tidings",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                env=node_env(
                    TIDINGS_STORE=store or self.store,
                    TIDINGS_BUS=bus or self.bus,
                    TIDINGS_BUS_PREFIX=self.prefix,
                    **env,
                ),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        node = NodeProc(name, port, proc, log_path)
        self.nodes.append(node)
        if ready:
            await self.wait_ready(node)
        return node

    async def start(self, count: int, **env: str) -> list[NodeProc]:
        """Start ``count`` nodes at once (in parallel: each takes ~1 s to boot)."""
        procs = [await self.spawn(ready=False, port=None, **env) for _ in range(count)]
        await asyncio.gather(*(self.wait_ready(n) for n in procs))
        return procs

    @staticmethod
    async def wait_ready(node: NodeProc) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if not node.running:
                raise AssertionError(f"{node.name} exited early:\n{node.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, _ = await readyz(node.http_url)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.name} not ready in time:\n{node.log_tail()}")
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)


# -- raw peers -------------------------------------------------------------------


class Peer:
    """A raw WebSocket client that reads every frame in a background task.

    ``msgs`` holds every ``msg`` frame in arrival order (duplicates too, so a
    test can count them); sends are matched to their ``ack`` or ``error``
    by ``client_msg_id`` (the error's ``ref``). Cumulative ``delivered``
    frames go out every ``DELIVERED_EVERY_S`` as the SDK does.
    """

    def __init__(self, raw: Raw, account: Account, node: str, welcome: dict[str, Any]) -> None:
        self.raw = raw
        self.account = account
        self.node = node
        self.welcome = welcome
        self.msgs: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.reconnect: dict[str, Any] | None = None
        self.reconnect_at: float | None = None
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.arrived = asyncio.Event()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._high: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._tasks = [
            asyncio.create_task(self._read(), name=f"peer-read-{account.username}"),
            asyncio.create_task(self._report(), name=f"peer-delivered-{account.username}"),
        ]

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, node: NodeProc | str, account: Account
    ) -> Peer:
        ws_url = node if isinstance(node, str) else node.ws_url
        name = ws_url if isinstance(node, str) else node.name
        raw, welcome = await Raw.connect(session, ws_url, account.token)
        return cls(raw, account, name, welcome)

    def seqs(self, conversation_id: str) -> list[int]:
        """Seqs of every ``msg`` of a conversation, in arrival order."""
        return [m["seq"] for m in self.msgs if m["conversation_id"] == conversation_id]

    async def send(
        self, conversation_id: str, client_msg_id: str, timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """Send and wait (bounded) for this send's ``ack`` or ``error``."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[client_msg_id] = fut
        await self.raw.send(
            {
                "type": "send",
                "id": client_msg_id,
                "conversation_id": conversation_id,
                "client_msg_id": client_msg_id,
                "content": {"text": client_msg_id},
            }
        )
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._waiting.pop(client_msg_id, None)

    async def wait_for(self, predicate: Any, timeout: float = WAIT_S) -> None:
        """Wait (bounded) until ``predicate()`` holds, re-checked on every frame."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

    async def _read(self) -> None:
        ws = self.raw.ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else ws.close_code
                    self.close_code = int(code) if isinstance(code, int) else None
                    return
                frame: dict[str, Any] = msgspec.json.decode(msg.data)
                kind = frame["type"]
                if kind == "msg":
                    self.msgs.append(frame)
                    cid, seq = frame["conversation_id"], frame["seq"]
                    if seq > self._high.get(cid, 0):
                        self._high[cid] = seq
                elif kind == "ack":
                    self.acks[frame["client_msg_id"]] = frame
                    self._settle(frame["client_msg_id"], frame)
                elif kind == "error":
                    self.errors.append(frame)
                    if frame.get("ref"):
                        self._settle(frame["ref"], frame)
                elif kind == "reconnect":
                    self.reconnect = frame
                    self.reconnect_at = time.monotonic()
                self.arrived.set()
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed.set()
            self.arrived.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    def _settle(self, key: str, frame: dict[str, Any]) -> None:
        fut = self._waiting.get(key)
        if fut is not None and not fut.done():
            fut.set_result(frame)

    async def _report(self) -> None:
        """Cumulative delivered per conversation, batched; ends with the connection."""
        while not self.closed.is_set():
            await asyncio.sleep(DELIVERED_EVERY_S)
            for cid, seq in list(self._high.items()):
                if self._reported.get(cid, 0) < seq and not self.closed.is_set():
                    self._reported[cid] = seq
                    with contextlib.suppress(Exception):
                        await self.raw.send(
                            {"type": "delivered", "conversation_id": cid, "seq": seq}
                        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.raw.close()


async def close_all(peers: Iterable[Peer]) -> None:
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


async def history(http: Http, token: str, cid: str) -> list[dict[str, Any]]:
    """The whole stored history of a conversation over HTTP (paged, bounded)."""
    messages: list[dict[str, Any]] = []
    after = 0
    for _ in range(10_000):
        status, body = await http.call(
            "GET", f"/v1/conversations/{cid}/messages?after_seq={after}&limit=200", token
        )
        assert status == 200, body
        if not body["messages"]:
            break
        messages.extend(body["messages"])
        after = int(body["messages"][-1]["seq"])
    return messages
