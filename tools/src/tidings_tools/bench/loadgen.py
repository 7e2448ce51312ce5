"""One load-generator worker process: many WebSocket clients on one uvloop loop.

Why processes: one Python process cannot both hold 10,000 sockets (the
machine allows 20,000 open files per process, and the server needs its own)
and drive tens of thousands of frames a second, so the coordinator
(:mod:`tidings_tools.bench.runner`) spreads clients over several of these workers.

Each worker talks to the coordinator over a ``multiprocessing`` pipe in three
phases, so that every worker's clients are connected before any measurement
starts and stay connected until the coordinator has read the server's CPU and
memory:

1. connect its clients (``hello`` -> ``welcome``; on the baseline also
   ``join`` -> ``joined``) and report ``("ready", connected, failed)``;
2. on ``("go", start_ns)`` run the scenario and report ``("result", {...})``;
3. on ``("stop",)`` close its sockets and exit.

Any failure is reported as ``("error", text)``. Every wait is bounded.

Which messages count: those whose ``client_msg_id`` carries this run's nonce
(``{nonce}-...``), never a comparison of the embedded send time with
``start_ns``. A clock test was wrong twice over: event-loop timers (uvloop's
have millisecond resolution and round) may wake a sender up to about a
millisecond before the wall-clock instant it waited for, so a message of this
run could look older than the run and be silently dropped by every receiver;
and it says nothing about which run a redelivered message belongs to.
Rejections, failed sends and failed readers are counted in ``errors`` (a
worker never dies of a server refusing something), so every run has a row.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from multiprocessing.connection import Connection
from typing import Any, Literal, Protocol

import aiohttp
import msgspec

from tidings_tools.bench.frames import (
    Delivered,
    Hello,
    InFrame,
    Join,
    Ping,
    Probe,
    Send,
    decode_frame,
    encode_frame,
)

TARGET_TIDINGS = "tidings"
TARGET_BASELINE = "baseline"

ROLE_RECEIVER = 0
ROLE_SENDER = 1
ROLE_IDLE = 2

# Connects in flight per worker: enough to keep the server's accept loop busy,
# few enough that a slow server is not buried under SYN retries and timeouts.
CONNECT_CONCURRENCY = 128
# Bound on one connect + hello/welcome (+ join) exchange.
CONNECT_TIMEOUT_S = 30.0
# Frames read while waiting for `welcome` (Tidings may send typing states first).
HANDSHAKE_MAX_FRAMES = 50
# A receiver reports `delivered` after this many messages, as a real client batches it...
DELIVERED_EVERY = 50
# ...or when this much time has passed since its last report, so that the
# server's redelivery timer (at least a few seconds) never fires in a run.
DELIVERED_MAX_DELAY_NS = 1_000_000_000
# Any connection silent for this long sends a `ping`; Tidings closes
# connections silent for twice its heartbeat (25 s by default).
KEEPALIVE_IDLE_NS = 15_000_000_000
# How often the keepalive sweep runs.
KEEPALIVE_SWEEP_S = 5.0
# Bound on waiting for the coordinator between phases.
CONTROL_TIMEOUT_S = 600.0
# Bound on closing all sockets at the end.
CLOSE_TIMEOUT_S = 20.0
# Largest frame the generator accepts from a server.
MAX_FRAME_BYTES = 4 * 1024 * 1024

_TEXT = aiohttp.WSMsgType.TEXT


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSpec:
    """One WebSocket client: its token (Tidings only), conversation or room, role, pair,
    and the node (index into :attr:`WorkerSpec.ws_urls`) it connects to."""

    token: str | None
    conversation: str
    role: int
    pair: int = -1
    node: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything one worker needs; pickled to the worker process."""

    index: int
    scenario: str
    target: str
    ws_urls: tuple[str, ...]
    local_addr: str | None
    clients: list[ClientSpec]
    nonce: str
    messages: int = 0
    rate: float = 0.0
    window: int = 0
    seconds: float = 0.0
    drain_s: float = 0.0


class Refused(ValueError):
    """The server answered the handshake with an ``error`` frame (the message is its code)."""


async def sleep_until(due_ns: int) -> None:
    """Sleep until the wall clock reaches `due_ns`, never returning before it.

    One ``asyncio.sleep`` is not enough: loop timers run on the monotonic clock
    at millisecond resolution (uvloop rounds the delay to whole milliseconds),
    so they may fire up to about a millisecond before the wall-clock instant.
    """
    # The condition is the clock itself, not an event another task could set.
    while (delay_ns := due_ns - time.time_ns()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(delay_ns / 1e9)


class Client:
    """One connection's state; the reader task updates it as frames arrive."""

    __slots__ = ("held", "last_report_ns", "last_tx_ns", "spec", "unreported", "ws")

    def __init__(
        self, spec: ClientSpec, ws: aiohttp.ClientWebSocketResponse[Literal[False]]
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.held = 0  # highest seq received (messages arrive in seq order)
        self.unreported = 0  # messages received since the last `delivered`
        self.last_report_ns = time.time_ns()
        self.last_tx_ns = self.last_report_ns

    async def send(self, frame: msgspec.Struct) -> None:
        self.last_tx_ns = time.time_ns()
        await self.ws.send_frame(encode_frame(frame), _TEXT)

    async def maybe_report(self, now: int, force: bool = False) -> None:
        """Send a cumulative `delivered` like a real client: batched, and never stale."""
        if self.unreported and (
            force
            or self.unreported >= DELIVERED_EVERY
            or now - self.last_report_ns >= DELIVERED_MAX_DELAY_NS
        ):
            self.unreported = 0
            self.last_report_ns = now
            await self.send(Delivered(self.spec.conversation, self.held))


class Worker:
    """The clients of one worker process and the counters the scenarios fill in."""

    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.clients: list[Client] = []
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.duplicates = 0
        self.undecodable = 0
        self.acks = 0
        self.delivered = 0
        self.done = asyncio.Event()
        self.remaining = 0

    # -- control ------------------------------------------------------------------

    async def recv_control(self) -> tuple[Any, ...]:
        """Wait (bounded, off the event loop) for the coordinator's next command."""
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.conn.poll, CONTROL_TIMEOUT_S)
        if not ready:
            raise TimeoutError("no command from the coordinator")
        command: tuple[Any, ...] = self.conn.recv()
        return command

    # -- connecting ---------------------------------------------------------------

    async def connect_all(self, session: aiohttp.ClientSession, specs: list[ClientSpec]) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(cspec: ClientSpec) -> None:
            async with gate:
                try:
                    client = await asyncio.wait_for(
                        self.connect(session, cspec), timeout=CONNECT_TIMEOUT_S
                    )
                except Refused as exc:
                    self.failed += 1
                    self.errors[f"connect:refused:{exc}"] += 1
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    self.failed += 1
                    self.count_error("connect", exc)
                else:
                    self.clients.append(client)

        await asyncio.gather(*(one(c) for c in specs))

    async def connect(self, session: aiohttp.ClientSession, cspec: ClientSpec) -> Client:
        ws = await session.ws_connect(
            self.spec.ws_urls[cspec.node],
            autoping=True,
            heartbeat=None,
            max_msg_size=MAX_FRAME_BYTES,
            decode_text=False,
        )
        client = Client(cspec, ws)
        await client.send(Hello(cspec.token or ""))
        await _expect(ws, "welcome")
        if self.spec.target == TARGET_BASELINE:
            await client.send(Join(cspec.conversation))
            await _expect(ws, "joined")
        return client

    # -- reading ------------------------------------------------------------------

    async def read_loop(
        self, client: Client, on_frame: Callable[[Client, InFrame, int], Awaitable[None]]
    ) -> None:
        """Feed every frame of one connection to the scenario's handler."""
        ws = client.ws
        while True:
            message = await ws.receive()
            if message.type is not _TEXT and message.type is not aiohttp.WSMsgType.BINARY:
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.ERROR,
                ):
                    self.errors["closed_by_server"] += 1
                    return
                continue
            now = time.time_ns()
            try:
                frame = decode_frame(message.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.undecodable += 1
                continue
            if frame.type == "error":
                self.errors[f"error:{frame.code}"] += 1
            try:
                await on_frame(client, frame, now)
            except (aiohttp.ClientError, OSError, RuntimeError) as exc:
                # A reply (`delivered`, the next send) failed: the socket is gone.
                self.count_error("reader", exc)
                return

    async def keepalive(self) -> None:
        """Ping connections that have been silent, so idle runs are not cut by the server."""
        while True:
            await asyncio.sleep(KEEPALIVE_SWEEP_S)
            now = time.time_ns()
            for client in self.clients:
                if now - client.last_tx_ns > KEEPALIVE_IDLE_NS and not client.ws.closed:
                    await self.send_or_count(client, Ping("k"), "ping")

    def count_error(self, where: str, exc: BaseException) -> None:
        self.errors[f"{where}:{type(exc).__name__}"] += 1

    async def send_or_count(self, client: Client, frame: msgspec.Struct, where: str) -> bool:
        """Send a frame; a failure (the server closed the socket) is counted, not raised."""
        if client.ws.closed:
            self.errors[f"{where}:closed"] += 1
            return False
        try:
            await client.send(frame)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            self.count_error(where, exc)
            return False
        return True

    async def final_reports(self, clients: list[Client]) -> None:
        """Send every receiver's last cumulative `delivered` (failures are counted)."""
        for client in clients:
            if client.unreported and not client.ws.closed:
                try:
                    await client.maybe_report(time.time_ns(), force=True)
                except (aiohttp.ClientError, OSError, RuntimeError) as exc:
                    self.count_error("report", exc)

    def finish_one(self, count: int = 1) -> None:
        self.remaining -= count
        if self.remaining <= 0:
            self.done.set()

    def common_result(self) -> dict[str, Any]:
        return {
            "connected": len(self.clients),
            "failed": self.failed,
            "errors": dict(self.errors),
            "duplicates": self.duplicates,
            "undecodable": self.undecodable,
            "acks": self.acks,
            "delivered": self.delivered,
        }


async def _expect(ws: aiohttp.ClientWebSocketResponse[Literal[False]], kind: str) -> None:
    """Read frames until one of type `kind` (bounded by HANDSHAKE_MAX_FRAMES)."""
    for _ in range(HANDSHAKE_MAX_FRAMES):
        message = await ws.receive()
        if message.type is not _TEXT:
            raise ValueError(f"connection ended while waiting for {kind}: {message.type!r}")
        frame = msgspec.json.decode(message.data)
        if isinstance(frame, dict) and frame.get("type") == kind:
            return
        if isinstance(frame, dict) and frame.get("type") == "error":
            raise Refused(str(frame.get("code")))
    raise ValueError(f"no {kind} in the first {HANDSHAKE_MAX_FRAMES} frames")


# -- scenarios -----------------------------------------------------------------------


async def run_fanout(w: Worker, start_ns: int) -> dict[str, Any]:
    """One sender posts K messages at a fixed rate; every other member must receive each.

    Per message the worker keeps how many of its receivers got it and the latest
    receive time; the coordinator takes the latest over all workers, which is
    "send -> the last member receiving it".
    """
    k = w.spec.messages
    counts = [0] * k
    last_ns = [0] * k
    sent_ns = [0] * k
    receivers = [c for c in w.clients if c.spec.role == ROLE_RECEIVER]
    senders = [c for c in w.clients if c.spec.role == ROLE_SENDER]
    w.remaining = len(receivers) * k + len(senders) * k
    run_prefix = f"{w.spec.nonce}-"

    async def on_frame(client: Client, frame: InFrame, now: int) -> None:
        kind = frame.type
        if kind == "msg":
            if frame.seq <= client.held:
                w.duplicates += 1
                return
            client.held = frame.seq
            client.unreported += 1
            probe = frame.content
            # Only this run's messages count: a redelivery from an earlier run
            # (same group, --repeat or a long-lived --url server) carries another nonce.
            cmid = frame.client_msg_id
            if (
                probe is not None
                and 0 <= probe.i < k
                and cmid is not None
                and cmid.startswith(run_prefix)
            ):
                i = probe.i
                counts[i] += 1
                sent_ns[i] = probe.t
                if now > last_ns[i]:
                    last_ns[i] = now
                w.delivered += 1
                w.finish_one()
            await client.maybe_report(now)
        elif kind == "ack":
            w.acks += 1
            w.finish_one()
        elif kind == "error" and client.spec.role == ROLE_SENDER:
            # A refused send (counted in errors by the reader) gets no ack.
            w.finish_one()

    async def send_all(client: Client) -> None:
        interval_ns = int(1e9 / w.spec.rate)
        for i in range(k):
            await sleep_until(start_ns + i * interval_ns)
            probe = Probe(f"fan-out message {i}", i, time.time_ns())
            frame = Send(client.spec.conversation, f"{run_prefix}{i}", probe)
            if not await w.send_or_count(client, frame, "send"):
                w.finish_one(k - i)  # no acks will come for the rest
                return

    deadline_s = (start_ns - time.time_ns()) / 1e9 + k / w.spec.rate + w.spec.drain_s
    await _run_until_done(w, on_frame, [send_all(c) for c in senders], deadline_s)
    await w.final_reports(receivers)
    result = w.common_result()
    result.update(counts=counts, last_ns=last_ns, sent_ns=sent_ns, receivers=len(receivers))
    return result


async def run_throughput(w: Worker, start_ns: int) -> dict[str, Any]:
    """Each pair's sender keeps `window` sends in flight for `seconds`.

    A message counts once both its `ack` (to the sender) and its `msg` (to the
    receiver) have arrived within the measured window; both ends of a pair live
    in this worker, so the join needs no coordination.
    """
    window = w.spec.window
    end_ns = start_ns + int(w.spec.seconds * 1e9)
    senders = {c.spec.pair: c for c in w.clients if c.spec.role == ROLE_SENDER}
    receivers = [c for c in w.clients if c.spec.role == ROLE_RECEIVER]
    next_index = dict.fromkeys(senders, 0)
    in_flight = dict.fromkeys(senders, 0)
    half_done: dict[tuple[int, int], bool] = {}
    latencies_ms = array.array("d")
    completed = 0
    run_prefix = f"{w.spec.nonce}-"
    w.remaining = 1  # set when the last in-flight send is answered after end_ns

    def complete(pair: int, i: int, now: int) -> None:
        nonlocal completed
        key = (pair, i)
        if half_done.pop(key, False):
            if now <= end_ns:
                completed += 1
        else:
            half_done[key] = True

    def check_drained() -> None:
        # Done when every send is answered and every acked message delivered.
        if not half_done and not any(in_flight.values()):
            w.finish_one()

    async def send_next(client: Client) -> None:
        pair = client.spec.pair
        i = next_index[pair]
        next_index[pair] = i + 1
        in_flight[pair] += 1  # before the await: the answer may be read while it writes
        probe = Probe("throughput", i, time.time_ns())
        frame = Send(client.spec.conversation, f"{run_prefix}{pair}-{i}", probe)
        if not await w.send_or_count(client, frame, "send"):
            in_flight[pair] -= 1  # no answer will come

    async def on_frame(client: Client, frame: InFrame, now: int) -> None:
        kind = frame.type
        pair = client.spec.pair
        if kind == "msg":
            if frame.seq <= client.held:
                w.duplicates += 1
                return
            client.held = frame.seq
            client.unreported += 1
            w.delivered += 1
            probe = frame.content
            cmid = frame.client_msg_id
            # Only this run's messages count (see run_fanout).
            if probe is not None and cmid is not None and cmid.startswith(run_prefix):
                if now <= end_ns:
                    latencies_ms.append((now - probe.t) / 1e6)
                complete(pair, probe.i, now)
            await client.maybe_report(now)
            if now >= end_ns:
                check_drained()
        elif kind == "ack" or (kind == "error" and client.spec.role == ROLE_SENDER):
            in_flight[pair] -= 1
            if kind == "ack":
                w.acks += 1
                if frame.client_msg_id is not None:
                    complete(pair, int(frame.client_msg_id.rpartition("-")[2]), now)
            if now < end_ns:
                await send_next(client)
            else:
                check_drained()

    async def start(client: Client) -> None:
        await sleep_until(start_ns)
        for _ in range(window):
            await send_next(client)

    if not senders:
        w.remaining = 0
    deadline_s = (end_ns - time.time_ns()) / 1e9 + w.spec.drain_s
    await _run_until_done(w, on_frame, [start(c) for c in senders.values()], deadline_s)
    await w.final_reports(receivers)
    result = w.common_result()
    result.update(
        completed=completed,
        sent=sum(next_index.values()),
        latencies_ms=latencies_ms.tobytes(),
    )
    return result


async def run_connections(w: Worker, session: aiohttp.ClientSession) -> dict[str, Any]:
    """Open this worker's share of idle connections as fast as the server accepts them."""
    first_ns = time.time_ns()
    await w.connect_all(session, w.spec.clients)
    last_ns = time.time_ns()
    result = w.common_result()
    result.update(first_ns=first_ns, last_ns=last_ns)
    return result


async def _run_until_done(
    w: Worker,
    on_frame: Callable[[Client, InFrame, int], Awaitable[None]],
    drivers: list[Coroutine[Any, Any, None]],
    deadline_s: float,
) -> None:
    """Run readers and drivers until every expected event arrived or the deadline passed."""
    if w.remaining <= 0:
        w.done.set()
    readers = [asyncio.create_task(w.read_loop(c, on_frame)) for c in w.clients]
    driver_tasks = [asyncio.create_task(d) for d in drivers]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(w.done.wait(), timeout=max(deadline_s, 0.1))
    finally:
        for task in [*readers, *driver_tasks]:
            task.cancel()
        await asyncio.gather(*readers, *driver_tasks, return_exceptions=True)
    for task in driver_tasks:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError("a sender failed") from task.exception()


async def _ignore(client: Client, frame: InFrame, now: int) -> None:
    return None


# -- process entry -------------------------------------------------------------------


async def _work(spec: WorkerSpec, conn: Connection) -> None:
    w = Worker(spec, conn)
    local = (spec.local_addr, 0) if spec.local_addr else None
    connector = aiohttp.TCPConnector(limit=0, local_addr=local, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
    readers: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        keepalive = asyncio.create_task(w.keepalive())
        try:
            if spec.scenario != "connections":
                await w.connect_all(session, spec.clients)
            conn.send(("ready", len(w.clients), w.failed))
            command = await w.recv_control()
            if command[0] != "go":
                return
            if spec.scenario == "fanout":
                result = await run_fanout(w, command[1])
            elif spec.scenario == "throughput":
                result = await run_throughput(w, command[1])
            else:
                result = await run_connections(w, session)
            conn.send(("result", result))
            # Keep reading while idle, so that server pings are answered.
            readers = [asyncio.create_task(w.read_loop(c, _ignore)) for c in w.clients]
            await w.recv_control()  # ("stop",)
        finally:
            for task in readers:
                task.cancel()
            keepalive.cancel()
            await asyncio.gather(keepalive, *readers, return_exceptions=True)
            await close_sockets(c.ws for c in w.clients)


class Closable(Protocol):
    """A client WebSocket of either kind the generators use (aiohttp's, or the lean one)."""

    @property
    def closed(self) -> bool: ...

    async def close(self) -> Any: ...


async def close_sockets(sockets: Iterable[Closable | None]) -> None:
    """Close a worker's WebSockets together, bounded by ``CLOSE_TIMEOUT_S``."""
    closes = [ws.close() for ws in sockets if ws is not None and not ws.closed]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), CLOSE_TIMEOUT_S)


def run_in_process(work: Coroutine[Any, Any, None], conn: Connection, label: str) -> None:
    """Run a worker's coroutine on uvloop; report a crash to the coordinator."""
    try:
        import uvloop

        uvloop.run(work)
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{label}: {traceback.format_exc()}"))
        raise
    finally:
        conn.close()


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Process entry point (must be importable by name for the `spawn` start method)."""
    run_in_process(_work(spec, conn), conn, f"worker {spec.index}")
