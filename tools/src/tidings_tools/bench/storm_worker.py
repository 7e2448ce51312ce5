"""One restart-storm load-generator process: many reconnecting WebSocket clients.

Each client behaves like the SDK's resilient client, reduced to what the storm
measures (msgspec frames over a minimal WebSocket client, so that the generator costs
the shared two cores as little as possible):

- connect (:mod:`tidings_tools.bench.wsclient`, a lean client: the generator shares
  the cores with the servers), ``hello`` -> ``welcome``, then ``sync`` (with
  its cursor for the one group a chatter is in) until ``sync_done`` with
  ``more: false``: only then is it *back*;
- after a drop, wait one :class:`~tidings_client.backoff.Backoff` interval (the
  first attempt too); a ``reconnect`` frame's ``after_ms`` and a 503's
  ``Retry-After`` replace that interval without moving the schedule on (the
  SDK's rules, :mod:`tidings_client.resilience`); with ``backoff="none"`` it
  reconnects at once and retries every :data:`NONE_RETRY_S`;
- chatters send to their group at a low rate; a send stays pending until its
  ``ack`` and is sent again (same ``client_msg_id``) after every reconnect.

Protocol with the coordinator (:mod:`tidings_tools.bench.storm`) over a pipe:
``("ready", connected, failed)``; on ``("go",)`` drops start to count
(``("status", affected, back)`` about once a second from then on); on
``("finish",)`` the chatters stop, flush their pending sends, run a final sync,
and the worker answers ``("result", {...})`` and exits. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from tidings_client.backoff import Backoff
from tidings_client.resilience import MIN_SERVER_RETRY_S
from tidings_tools.bench.frames import Delivered, Hello, Ping, Probe, Send
from tidings_tools.bench.loadgen import close_sockets, run_in_process
from tidings_tools.bench.wsclient import HandshakeRefused, LeanWebSocket, SourcePorts, connect

BACKOFF_DEFAULT = "default"
BACKOFF_NONE = "none"
# "none": the naive client reconnects at once and then every 100 ms.
NONE_RETRY_S = 0.1
# Bucket of the per-worker timelines (the coordinator re-bins to seconds).
BUCKET_NS = 100_000_000
# Connects in flight per worker during the initial connect phase: below what
# the nodes admit at once (handshake_concurrency, 64 each by default), so that
# setting up 50,000 clients is not mostly 503s.
CONNECT_CONCURRENCY = 32
# Attempts per client in the initial connect phase (503s are retried after Retry-After).
INITIAL_ATTEMPTS = 30
# How often the generator's event-loop lag is probed once the storm starts.
LAG_PROBE_S = 0.05
# Bound on one connect + hello/welcome exchange.
HANDSHAKE_TIMEOUT_S = 15.0
# Frames read while waiting for `welcome`.
HANDSHAKE_MAX_FRAMES = 50
# Bound on the attempts of one reconnect (the coordinator's window ends it first).
MAX_RECONNECT_ATTEMPTS = 100_000
# A `sync` not answered within this long counts as a failed reconnect.
SYNC_TIMEOUT_S = 30.0
# Pages of one sync (each at most the server's sync_page_limit messages).
MAX_SYNC_PAGES = 100
# Initial connect (and first sync) of all clients of a worker.
READY_TIMEOUT_S = 240.0
# Any connection silent this long sends a `ping` (the server cuts at 2 x 25 s).
KEEPALIVE_IDLE_NS = 15_000_000_000
KEEPALIVE_SWEEP_S = 5.0
STATUS_EVERY_S = 1.0
# A pending send without ack for this long is sent again (same client_msg_id).
RESEND_AFTER_NS = 5_000_000_000
# Bounds of the finish phase: pending sends acked, then the final sync.
FLUSH_TIMEOUT_S = 30.0
FINAL_SYNC_TIMEOUT_S = 20.0
POLL_S = 0.2
# A chatter reports `delivered` at most this often (cumulative, as the SDK).
DELIVERED_EVERY_NS = 1_000_000_000
CONTROL_TIMEOUT_S = 900.0
# Messages one chatter sends at most in a run (the window ends it first).
MAX_MESSAGES_PER_CHATTER = 100_000

# What a failed connect, send or read raises.
NETWORK_ERRORS = (OSError, TimeoutError, ValueError)


class StormFrame(msgspec.Struct, frozen=True):
    """Any server frame, flattened to the fields the storm reads."""

    type: str
    conversation_id: str | None = None
    seq: int = 0
    client_msg_id: str | None = None
    code: str | None = None
    after_ms: int = 0
    more: bool = False


class Sync(msgspec.Struct, tag="sync", tag_field="type", omit_defaults=True):
    id: str
    cursors: dict[str, int] | None = None


_decode = msgspec.json.Decoder(StormFrame).decode
_encode = msgspec.json.Encoder().encode


@dataclasses.dataclass(frozen=True, slots=True)
class StormClientSpec:
    index: int
    token: str
    conversation: str | None  # the group of a chatter; None for an idle client


@dataclasses.dataclass(frozen=True, slots=True)
class StormWorkerSpec:
    index: int
    ws_url: str
    local_addrs: tuple[str, ...]  # source addresses, spread over the clients
    clients: list[StormClientSpec]
    nonce: str
    backoff: str
    backoff_base: float
    chat_interval_s: float
    seed: int


class Refused503(Exception):
    """The handshake was answered 503 (admission control or draining)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"503, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class SClient:
    """One client's connection and the state that survives its reconnects."""

    def __init__(self, spec: StormClientSpec) -> None:
        self.spec = spec
        self.ws: LeanWebSocket | None = None
        self.ready = False  # connected and synced
        self.held: set[int] = set()
        self.contiguous = 0  # every seq up to here is held
        self.pending: dict[str, tuple[Send, int]] = {}  # cmid -> (frame, last sent ns)
        self.acked: dict[str, tuple[int, int]] = {}  # cmid -> (seq, time of the ack, ns)
        self.affected = False
        self.back_ns: int | None = None
        self.reconnect_at_ns: int | None = None
        self.last_tx_ns = time.time_ns()
        self.last_report_ns = 0
        self.syncs = 0
        self.final_pending = False
        # When this chatter's final sync was sent, once it has been answered.
        self.final_synced_ns: int | None = None
        self.final_sent_ns = 0

    def hold(self, seq: int) -> None:
        if seq > self.contiguous:
            self.held.add(seq)
            while self.contiguous + 1 in self.held:
                self.contiguous += 1

    def cursors(self) -> dict[str, int] | None:
        conv = self.spec.conversation
        return {conv: self.contiguous} if conv else None

    async def send(self, frame: msgspec.Struct) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            raise ConnectionResetError("not connected")
        self.last_tx_ns = time.time_ns()
        ws.send_text(_encode(frame))


class StormWorker:
    def __init__(self, spec: StormWorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.clients = [SClient(c) for c in spec.clients]
        self.armed = False
        self.finishing = False
        self.stop_chat = asyncio.Event()
        self.initial_failed = 0
        self.initial_503 = 0
        self.errors: Counter[str] = Counter()
        self.attempts: Counter[int] = Counter()
        self.successes: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        self.failures: Counter[int] = Counter()
        # (bucket the handshake ended in, its latency in ms, of which until the 101)
        self.handshake_ms: list[tuple[int, float, float]] = []
        self.loop_lag_ms: dict[int, float] = {}  # bucket -> the worst lag seen in it
        self.reconnect_frames = 0
        self.sent = 0
        self.rng = random.Random(spec.seed)
        self.sources = SourcePorts(spec.local_addrs) if spec.local_addrs else None

    # -- connections ----------------------------------------------------------------

    async def open_ws(self, c: SClient) -> float:
        """Connect and authenticate (hello -> welcome); raises Refused503 on a
        503. Returns when (perf_counter) the upgrade was answered 101."""
        try:
            ws = await connect(self.spec.ws_url, self.sources)
        except HandshakeRefused as exc:
            if exc.status == 503:
                header = exc.retry_after
                retry = float(header) if header and header.isdigit() else 1.0
                raise Refused503(retry) from None
            raise ConnectionRefusedError(str(exc)) from None
        upgraded = time.perf_counter()
        try:
            c.ws = ws
            await c.send(Hello(c.spec.token))
            for _ in range(HANDSHAKE_MAX_FRAMES):
                data = await ws.receive()
                if data is None:
                    raise ConnectionResetError("closed before welcome")
                frame = _decode(data)
                if frame.type == "welcome":
                    return upgraded
                if frame.type == "error":
                    raise ConnectionRefusedError(f"hello refused: {frame.code}")
            raise ConnectionResetError("no welcome")
        except BaseException:
            c.ws = None
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def initial_connect(self, c: SClient, gate: asyncio.Semaphore) -> None:
        """Connect once, retrying refusals; the gate is not held while waiting
        to retry, so that refused clients do not idle the other slots."""
        for _ in range(INITIAL_ATTEMPTS):
            async with gate:
                try:
                    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                        await self.open_ws(c)
                    return
                except Refused503 as exc:
                    self.initial_503 += 1
                    retry_s = exc.retry_after_s
                except NETWORK_ERRORS as exc:
                    self.errors[f"initial:{type(exc).__name__}"] += 1
                    retry_s = 1.0
            await asyncio.sleep(retry_s * self.rng.uniform(0.5, 1.5))
        self.initial_failed += 1

    def bucket(self) -> int:
        return time.time_ns() // BUCKET_NS

    async def reconnect(self, c: SClient) -> bool:
        """Back off and try until connected (True), or the worker is finishing (False)."""
        default = self.spec.backoff == BACKOFF_DEFAULT
        backoff = Backoff(base=self.spec.backoff_base, rng=random.Random(self.rng.random()))
        now = time.time_ns()
        if default:
            delay = backoff.next_delay()
            if c.reconnect_at_ns is not None:  # the server's after_ms replaces the interval
                delay = max(0.0, (c.reconnect_at_ns - now) / 1e9)
        else:
            delay = 0.0
        c.reconnect_at_ns = None
        for _ in range(MAX_RECONNECT_ATTEMPTS):
            if delay > 0:
                await asyncio.sleep(delay)
            if self.finishing and not c.spec.conversation:
                return False
            armed = self.armed
            if armed:
                self.attempts[self.bucket()] += 1
            start = time.perf_counter()
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    upgraded = await self.open_ws(c)
            except Refused503 as exc:
                if armed:
                    self.refused[self.bucket()] += 1
                delay = max(exc.retry_after_s, MIN_SERVER_RETRY_S) if default else NONE_RETRY_S
                continue
            except NETWORK_ERRORS as exc:
                if armed:
                    self.failures[self.bucket()] += 1
                    self.errors[f"reconnect:{type(exc).__name__}"] += 1
                delay = backoff.next_delay() if default else NONE_RETRY_S
                continue
            if armed:
                self.successes[self.bucket()] += 1
                latency_ms = (time.perf_counter() - start) * 1000
                upgrade_ms = (upgraded - start) * 1000
                self.handshake_ms.append((self.bucket(), latency_ms, upgrade_ms))
            return True
        return False

    # -- the life of one client -------------------------------------------------------

    async def life(self, c: SClient) -> None:
        """Read until the connection drops, reconnect, sync; again (bounded by cancellation)."""
        for _ in range(MAX_RECONNECT_ATTEMPTS):
            if c.ws is None and not await self.reconnect(c):
                return
            try:
                await self.start_sync(c)
                await self.read_loop(c)
            except (OSError, RuntimeError) as exc:
                self.errors[f"session:{type(exc).__name__}"] += 1
            ws, c.ws, c.ready = c.ws, None, False
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            if self.armed:
                c.affected = True
                c.back_ns = None
            if self.finishing and not c.spec.conversation:
                return

    async def start_sync(self, c: SClient) -> None:
        c.syncs += 1
        await c.send(Sync(f"s{c.syncs}", c.cursors()))

    async def read_loop(self, c: SClient) -> None:
        ws = c.ws
        assert ws is not None
        sync_started = time.monotonic()
        while True:
            timeout = None
            if not c.ready:
                timeout = max(0.1, SYNC_TIMEOUT_S - (time.monotonic() - sync_started))
            try:
                data = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                self.errors["sync:timeout"] += 1
                return
            if data is None:
                return
            try:
                frame = _decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.errors["undecodable"] += 1
                continue
            await self.handle(c, frame)

    async def handle(self, c: SClient, frame: StormFrame) -> None:
        kind = frame.type
        now = time.time_ns()
        if kind == "msg":
            if frame.conversation_id == c.spec.conversation:
                c.hold(frame.seq)
                if c.ready and now - c.last_report_ns >= DELIVERED_EVERY_NS:
                    await self.report(c, now)
        elif kind == "ack":
            cmid = frame.client_msg_id
            if cmid is not None and cmid in c.pending:
                del c.pending[cmid]
                c.acked[cmid] = (frame.seq, now)
                c.hold(frame.seq)
        elif kind == "sync_done":
            if frame.more:
                await self.start_sync(c)
                return
            c.ready = True
            if c.final_pending:
                c.final_pending = False
                c.final_synced_ns = c.final_sent_ns
            if c.affected and c.back_ns is None:
                c.back_ns = now
            await self.report(c, now)
            for cmid, (send, _) in list(c.pending.items()):  # resend what had no ack
                c.pending[cmid] = (send, now)
                await c.send(send)
        elif kind == "reconnect":
            self.reconnect_frames += 1
            c.reconnect_at_ns = now + frame.after_ms * 1_000_000
        elif kind == "error":
            self.errors[f"frame:{frame.code}"] += 1

    async def report(self, c: SClient, now: int) -> None:
        conv = c.spec.conversation
        if conv and c.contiguous:
            c.last_report_ns = now
            await c.send(Delivered(conv, c.contiguous))

    # -- chat -----------------------------------------------------------------------

    async def chat(self, c: SClient) -> None:
        conv = c.spec.conversation
        assert conv is not None
        interval = self.spec.chat_interval_s
        for i in range(MAX_MESSAGES_PER_CHATTER):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_chat.wait(), interval * self.rng.uniform(0.5, 1.5))
            if self.stop_chat.is_set():
                return
            now = time.time_ns()
            for cmid, (send, sent_ns) in list(c.pending.items()):
                if c.ready and now - sent_ns > RESEND_AFTER_NS:
                    c.pending[cmid] = (send, now)
                    with contextlib.suppress(OSError, RuntimeError):
                        await c.send(send)
            cmid = f"{self.spec.nonce}-{c.spec.index}-{i}"
            send = Send(conv, cmid, Probe("storm", i, now))
            c.pending[cmid] = (send, now)
            self.sent += 1
            if c.ready:
                with contextlib.suppress(OSError, RuntimeError):
                    await c.send(send)

    async def finish(self) -> None:
        """Stop chatting, get every pending send acked, then one final sync per chatter."""
        self.finishing = True
        self.stop_chat.set()
        chatters = [c for c in self.clients if c.spec.conversation]
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while time.monotonic() < deadline and any(c.pending or not c.ready for c in chatters):
            now = time.time_ns()
            for c in chatters:
                for cmid, (send, sent_ns) in list(c.pending.items()):
                    if c.ready and now - sent_ns > RESEND_AFTER_NS:
                        c.pending[cmid] = (send, now)
                        with contextlib.suppress(OSError, RuntimeError):
                            await c.send(send)
            await asyncio.sleep(POLL_S)
        for c in chatters:
            if c.ready:
                c.final_pending = True
                c.final_sent_ns = time.time_ns()
                c.ready = False
                try:
                    await self.start_sync(c)
                except (OSError, RuntimeError):
                    c.final_pending = False
        deadline = time.monotonic() + FINAL_SYNC_TIMEOUT_S
        # A condition over many clients, polled (bounded by the deadline).
        while time.monotonic() < deadline and any(c.final_pending for c in chatters):  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)

    # -- periodic -------------------------------------------------------------------

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SWEEP_S)
            now = time.time_ns()
            for c in self.clients:
                if c.ready and now - c.last_tx_ns > KEEPALIVE_IDLE_NS:
                    with contextlib.suppress(OSError, RuntimeError):
                        await c.send(Ping("k"))

    def status(self) -> tuple[int, int]:
        affected = [c for c in self.clients if c.affected]
        return len(affected), sum(1 for c in affected if c.back_ns is not None and c.ready)

    async def report_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.conn.send(("status", *self.status()))

    async def recv_control(self) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.conn.poll, CONTROL_TIMEOUT_S)
        if not ready:
            raise TimeoutError("no command from the coordinator")
        command: tuple[Any, ...] = self.conn.recv()
        return command

    async def watch_lag(self) -> None:
        """Record how late this process's event loop runs a timer: every
        latency the generator measures includes it, so the storm reports it
        beside the handshake latency (cancelled at the end)."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            late_ms = (time.perf_counter() - start - LAG_PROBE_S) * 1000
            bucket = self.bucket()
            self.loop_lag_ms[bucket] = max(self.loop_lag_ms.get(bucket, 0.0), late_ms)

    def result(self) -> dict[str, Any]:
        affected = [c for c in self.clients if c.affected]
        chatters = [c for c in self.clients if c.spec.conversation]
        return {
            "connected_end": sum(1 for c in self.clients if c.ws is not None and not c.ws.closed),
            "affected": len(affected),
            "back_ns": [
                c.back_ns if c.back_ns is not None and c.ws is not None else -1 for c in affected
            ],
            "attempts": dict(self.attempts),
            "successes": dict(self.successes),
            "refused": dict(self.refused),
            "failures": dict(self.failures),
            "handshake_ms": self.handshake_ms,
            "loop_lag_ms": self.loop_lag_ms,
            "errors": dict(self.errors),
            "reconnect_frames": self.reconnect_frames,
            "initial_503": self.initial_503,
            "initial_failed": self.initial_failed,
            "sent": self.sent,
            "pending_left": sum(len(c.pending) for c in chatters),
            "final_sync_missing": sum(1 for c in chatters if c.final_synced_ns is None),
            "acked": [
                (c.spec.conversation, cmid, seq, at)
                for c in chatters
                for cmid, (seq, at) in c.acked.items()
            ],
            "held": [
                (
                    c.spec.index,
                    c.spec.conversation,
                    c.final_synced_ns,
                    sorted(c.held | set(range(1, c.contiguous + 1))),
                )
                for c in chatters
            ],
        }


async def _work(spec: StormWorkerSpec, conn: Connection) -> None:
    w = StormWorker(spec, conn)
    tasks: list[asyncio.Task[None]] = []
    try:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        settled = 0

        async def connect_and_live(c: SClient) -> None:
            # Each client syncs and keeps its link alive as soon as it is
            # connected: setting up 50,000 takes minutes, longer than the
            # server lets a silent connection live (2 heartbeats).
            nonlocal settled
            try:
                await w.initial_connect(c, gate)
            finally:
                settled += 1
            if c.ws is not None:
                await w.life(c)

        tasks = [asyncio.create_task(connect_and_live(c)) for c in w.clients]
        tasks.append(asyncio.create_task(w.keepalive()))
        deadline = time.monotonic() + READY_TIMEOUT_S
        # Polled over every client (bounded by the deadline).
        while time.monotonic() < deadline and (  # noqa: ASYNC110
            settled < len(w.clients) or not all(c.ready for c in w.clients if c.ws is not None)
        ):
            await asyncio.sleep(POLL_S)
        connected = [c for c in w.clients if c.ws is not None]
        conn.send(("ready", sum(1 for c in connected if c.ready), len(w.clients) - len(connected)))
        command = await w.recv_control()
        if command[0] != "go":
            return
        w.armed = True
        tasks.append(asyncio.create_task(w.watch_lag()))
        tasks += [asyncio.create_task(w.chat(c)) for c in connected if c.spec.conversation]
        tasks.append(asyncio.create_task(w.report_status()))
        command = await w.recv_control()
        if command[0] != "finish":
            return
        await w.finish()
        conn.send(("result", w.result()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_sockets(c.ws for c in w.clients)


def storm_worker_main(spec: StormWorkerSpec, conn: Connection) -> None:
    """Process entry point (importable by name for the `spawn` start method)."""
    run_in_process(_work(spec, conn), conn, f"storm worker {spec.index}")
