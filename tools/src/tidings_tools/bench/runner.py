"""The coordinator: sets up one target, drives the worker processes, and turns results into a row.

Why a separate coordinator: the server's CPU time and memory must be read at
the moments when every worker is connected and idle (before) and when every
worker has finished (after), which only a process that sees all workers can
do. The coordinator itself sends no frames.
"""

from __future__ import annotations

import array
import asyncio
import math
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from tidings_tools.bench.cluster import Cluster, ServiceCpu, service_cpu_delta
from tidings_tools.bench.loadgen import (
    ROLE_IDLE,
    ROLE_RECEIVER,
    ROLE_SENDER,
    TARGET_BASELINE,
    ClientSpec,
    WorkerSpec,
    worker_main,
)
from tidings_tools.bench.provision import Provisioner
from tidings_tools.bench.servers import Server, cpu_seconds, rss_kib

# Sockets per worker process: under the 20,000 open files a process may have,
# with room for the interpreter's own files.
MAX_CLIENTS_PER_WORKER = 15_000
# How long workers get to connect their clients (fan-out and throughput).
READY_TIMEOUT_S = 300.0
# Extra time, beyond a scenario's own length, before a missing result is an error.
RESULT_SLACK_S = 120.0
# Workers start together this long after the coordinator says go, so that the
# pipe messages have reached every worker before the first frame is sent.
START_DELAY_NS = 300_000_000
# Pause before reading the server's RSS, so that allocations settle.
RSS_SETTLE_S = 2.0
# How long to wait for a worker process to exit after `stop`.
JOIN_TIMEOUT_S = 30.0
# Messages still in flight after a fan-out's last send are awaited this long.
FANOUT_DRAIN_S = 10.0
# ... and after a throughput run's measured window (they do not count).
THROUGHPUT_DRAIN_S = 5.0
# First source address of the workers (127.0.0.2, .3, ...): each address has
# its own ephemeral port range, so 10,000s of connections never exhaust it.
FIRST_SOURCE_OCTET = 2


class Target:
    """A server under test (one node, or the nodes of a cluster) and, for Tidings, the
    accounts and conversations set up on it.

    Clients are spread over the nodes round-robin by connection; accounts and
    conversations are created through the first node (the nodes share a store).
    `labels` are extra fields of every row (``nodes``, ``store``, ``bus``).
    """

    def __init__(
        self,
        server: Server,
        nodes: list[Server] | None = None,
        labels: dict[str, Any] | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.server = server
        self.nodes = nodes or [server]
        self.labels = labels or {}
        self.cluster = cluster
        self.provisioner = None if server.target == TARGET_BASELINE else Provisioner(server.url)

    @property
    def name(self) -> str:
        return self.server.target

    @property
    def ws_urls(self) -> tuple[str, ...]:
        return tuple(node.ws_url for node in self.nodes)

    def node_of(self, connection: int) -> int:
        """The node of the `connection`-th client (round-robin)."""
        return connection % len(self.nodes)

    def node_cpu_seconds(self) -> list[float | None]:
        return [cpu_seconds(node.pid) for node in self.nodes]

    def rss_kib(self) -> int | None:
        """RSS summed over the nodes (None if any is unknown)."""
        values = [rss_kib(node.pid) for node in self.nodes]
        return None if any(v is None for v in values) else sum(v for v in values if v)


def _worker_count(clients: int, procs: int) -> int:
    return max(1, procs, math.ceil(clients / MAX_CLIENTS_PER_WORKER))


def _local_addr(url: str, index: int) -> str | None:
    host = urlsplit(url).hostname
    if host in ("127.0.0.1", "localhost"):
        return f"127.0.0.{FIRST_SOURCE_OCTET + index}"
    return None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _merge_errors(results: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for result in results:
        total.update(result["errors"])
    return dict(total)


def _recv(conn: Connection, expected: str, timeout_s: float) -> tuple[Any, ...]:
    if not conn.poll(timeout_s):
        raise TimeoutError(f"no {expected!r} from a worker within {timeout_s:.0f} s")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise RuntimeError(f"a worker exited before sending {expected!r}") from None
    if message[0] == "error":
        raise RuntimeError(str(message[1]))
    if message[0] != expected:
        raise RuntimeError(f"expected {expected!r} from a worker, got {message[0]!r}")
    return message


class Measurement:
    """What the workers reported plus the server's CPU and RSS around the run."""

    def __init__(self) -> None:
        self.ready: list[tuple[Any, ...]] = []
        self.results: list[dict[str, Any]] = []
        self.cpu_s: float | None = None
        self.node_cpu_s: list[float | None] = []
        self.postgres_cpu_s: float | None = None
        self.redis_cpu_s: float | None = None
        self.rss_before_kib: int | None = None
        self.rss_after_kib: int | None = None
        self.wall_s = 0.0


def _cpu_delta(before: list[float | None], after: list[float | None]) -> list[float | None]:
    return [None if b is None or a is None else a - b for b, a in zip(before, after, strict=True)]


class _Numbered(Protocol):
    @property
    def index(self) -> int: ...


SpecT = TypeVar("SpecT", bound=_Numbered)


def start_workers(
    main: Callable[[SpecT, Connection], None],
    specs: Sequence[SpecT],
    label: str,
    processes: list[SpawnProcess],
    conns: list[Connection],
) -> None:
    """Spawn one worker process per spec, each with a pipe to this coordinator.

    The lists are filled as processes start, so that a caller's ``finally``
    stops whatever did start if a later one fails.
    """
    ctx = multiprocessing.get_context("spawn")
    for spec in specs:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=main, args=(spec, child), name=f"{label}-{spec.index}")
        process.start()
        child.close()
        processes.append(process)
        conns.append(parent)


def drive(specs: list[WorkerSpec], target: Target, run_s: float) -> Measurement:
    """Start the workers, run the three phases (ready, go, stop), measure around `go`."""
    measured = Measurement()
    processes: list[SpawnProcess] = []
    conns: list[Connection] = []
    try:
        start_workers(worker_main, specs, "bench-worker", processes, conns)
        measured.ready = [_recv(c, "ready", READY_TIMEOUT_S) for c in conns]
        measured.rss_before_kib = target.rss_kib()
        services_before: ServiceCpu | None = None
        if target.cluster is not None:
            services_before = target.cluster.service_cpu()
        cpu_before = target.node_cpu_seconds()
        start = time.monotonic()
        start_ns = time.time_ns() + START_DELAY_NS
        for conn in conns:
            conn.send(("go", start_ns))
        measured.results = [_recv(c, "result", run_s + RESULT_SLACK_S)[1] for c in conns]
        measured.wall_s = time.monotonic() - start
        measured.node_cpu_s = _cpu_delta(cpu_before, target.node_cpu_seconds())
        if target.cluster is not None and services_before is not None:
            services_after = target.cluster.service_cpu()
            measured.postgres_cpu_s, measured.redis_cpu_s = service_cpu_delta(
                services_before, services_after
            )
        if all(c is not None for c in measured.node_cpu_s):
            measured.cpu_s = sum(c for c in measured.node_cpu_s if c is not None)
        if specs[0].scenario == "connections":
            time.sleep(RSS_SETTLE_S)
        measured.rss_after_kib = target.rss_kib()
        for conn in conns:
            conn.send(("stop",))
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT_S)
        for conn in conns:
            conn.close()
    return measured


def _base_row(scenario: str, target: Target, run: int, setup_s: float) -> dict[str, Any]:
    row = {"scenario": scenario, "target": target.name, "run": run}
    row.update(target.labels)
    row["setup_s"] = round(setup_s, 2)
    return row


def _cpu_fields(target: Target, measured: Measurement) -> dict[str, Any]:
    """Per-node CPU (clusters) and the shared services' CPU (when the tool started them)."""
    fields: dict[str, Any] = {}
    if len(target.nodes) > 1:
        fields["node_cpu_s"] = [_ms(c) for c in measured.node_cpu_s]
    if target.cluster is not None:
        fields["postgres_cpu_s"] = _ms(measured.postgres_cpu_s)
        if target.cluster.redis_url:
            fields["redis_cpu_s"] = _ms(measured.redis_cpu_s)
    return fields


def run_fanout(
    target: Target, members: int, messages: int, rate: float, procs: int, run: int
) -> dict[str, Any]:
    """One group (or room) of `members`; one member sends `messages` at `rate` per second."""
    nonce = uuid.uuid4().hex[:12]
    setup_start = time.monotonic()
    if target.provisioner is not None:
        accounts = asyncio.run(target.provisioner.ensure_accounts(members))
        conversation = asyncio.run(target.provisioner.group(accounts))
        tokens: list[str | None] = [a.token for a in accounts]
    else:
        conversation = f"fanout-{nonce}"
        tokens = [None] * members
    setup_s = time.monotonic() - setup_start
    clients = [
        ClientSpec(
            token, conversation, ROLE_SENDER if i == 0 else ROLE_RECEIVER, node=target.node_of(i)
        )
        for i, token in enumerate(tokens)
    ]
    workers = _worker_count(members, procs)
    specs = [
        WorkerSpec(
            index=w,
            scenario="fanout",
            target=target.name,
            ws_urls=target.ws_urls,
            local_addr=_local_addr(target.server.url, w),
            clients=clients[w::workers],
            nonce=nonce,
            messages=messages,
            rate=rate,
            drain_s=FANOUT_DRAIN_S,
        )
        for w in range(workers)
    ]
    measured = drive(specs, target, messages / rate + FANOUT_DRAIN_S)
    results = measured.results
    counts = [sum(r["counts"][i] for r in results) for i in range(messages)]
    last_ns = [max(r["last_ns"][i] for r in results) for i in range(messages)]
    sent_ns = [max(r["sent_ns"][i] for r in results) for i in range(messages)]
    receivers = sum(r["receivers"] for r in results)
    # Messages that reached at least one member; "last" is the latest member that got it.
    latencies = sorted((last_ns[i] - sent_ns[i]) / 1e6 for i in range(messages) if counts[i])
    delivered = sum(counts)
    row = _base_row("fanout", target, run, setup_s)
    row.update(
        members=members,
        messages=messages,
        rate=rate,
        expected=(members - 1) * messages,
        delivered=delivered,
        complete_messages=sum(1 for c in counts if c == receivers and receivers == members - 1),
        last_p50_ms=_ms(percentile(latencies, 50)),
        last_p95_ms=_ms(percentile(latencies, 95)),
        last_p99_ms=_ms(percentile(latencies, 99)),
        last_max_ms=_ms(latencies[-1] if latencies else None),
        acks=sum(r["acks"] for r in results),
        connected=sum(r["connected"] for r in results),
        duplicates=sum(r["duplicates"] for r in results),
        errors=_merge_errors(results),
        server_cpu_s=_ms(measured.cpu_s),
        cpu_us_per_delivery=(
            round(measured.cpu_s * 1e6 / delivered, 2)
            if measured.cpu_s is not None and delivered
            else None
        ),
        **_cpu_fields(target, measured),
    )
    return row


def run_throughput(
    target: Target, pairs: int, seconds: float, window: int, procs: int, run: int
) -> dict[str, Any]:
    """`pairs` 1:1 conversations; each sender keeps `window` sends in flight for `seconds`."""
    nonce = uuid.uuid4().hex[:12]
    setup_start = time.monotonic()
    if target.provisioner is not None:
        accounts = asyncio.run(target.provisioner.ensure_accounts(2 * pairs))
        couples = [(accounts[2 * p], accounts[2 * p + 1]) for p in range(pairs)]
        conversations = asyncio.run(target.provisioner.directs(couples))
        ends: list[tuple[str | None, str | None]] = [(a.token, b.token) for a, b in couples]
    else:
        conversations = [f"pair-{nonce}-{p}" for p in range(pairs)]
        ends = [(None, None)] * pairs
    setup_s = time.monotonic() - setup_start
    workers = _worker_count(2 * pairs, procs)
    per_worker: list[list[ClientSpec]] = [[] for _ in range(workers)]
    for p, (conversation, (sender, receiver)) in enumerate(zip(conversations, ends, strict=True)):
        # Both ends of a pair in one worker: it joins ack and delivery locally.
        per_worker[p % workers] += [
            ClientSpec(sender, conversation, ROLE_SENDER, p, target.node_of(2 * p)),
            ClientSpec(receiver, conversation, ROLE_RECEIVER, p, target.node_of(2 * p + 1)),
        ]
    specs = [
        WorkerSpec(
            index=w,
            scenario="throughput",
            target=target.name,
            ws_urls=target.ws_urls,
            local_addr=_local_addr(target.server.url, w),
            clients=per_worker[w],
            nonce=nonce,
            window=window,
            seconds=seconds,
            drain_s=THROUGHPUT_DRAIN_S,
        )
        for w in range(workers)
    ]
    measured = drive(specs, target, seconds + THROUGHPUT_DRAIN_S)
    results = measured.results
    latencies = array.array("d")
    for r in results:
        latencies.frombytes(r["latencies_ms"])
    ordered = sorted(latencies)
    completed = sum(r["completed"] for r in results)
    row = _base_row("throughput", target, run, setup_s)
    row.update(
        pairs=pairs,
        seconds=seconds,
        window=window,
        msgs_per_s=round(completed / seconds, 1),
        p50_ms=_ms(percentile(ordered, 50)),
        p99_ms=_ms(percentile(ordered, 99)),
        completed=completed,
        sent=sum(r["sent"] for r in results),
        acks=sum(r["acks"] for r in results),
        delivered=sum(r["delivered"] for r in results),
        connected=sum(r["connected"] for r in results),
        duplicates=sum(r["duplicates"] for r in results),
        errors=_merge_errors(results),
        server_cpu_s=_ms(measured.cpu_s),
        cpu_us_per_msg=(
            round(measured.cpu_s * 1e6 / completed, 2)
            if measured.cpu_s is not None and completed
            else None
        ),
        **_cpu_fields(target, measured),
    )
    return row


def run_connections(target: Target, count: int, users: int, procs: int, run: int) -> dict[str, Any]:
    """`count` idle authenticated connections; server RSS growth per connection."""
    nonce = uuid.uuid4().hex[:12]
    setup_start = time.monotonic()
    if target.provisioner is not None:
        accounts = asyncio.run(target.provisioner.ensure_accounts(max(1, min(users, count))))
        tokens: list[str | None] = [accounts[i % len(accounts)].token for i in range(count)]
    else:
        tokens = [None] * count
    setup_s = time.monotonic() - setup_start
    room = f"idle-{nonce}"
    clients = [
        ClientSpec(token, room, ROLE_IDLE, node=target.node_of(i)) for i, token in enumerate(tokens)
    ]
    workers = _worker_count(count, procs)
    specs = [
        WorkerSpec(
            index=w,
            scenario="connections",
            target=target.name,
            ws_urls=target.ws_urls,
            local_addr=_local_addr(target.server.url, w),
            clients=clients[w::workers],
            nonce=nonce,
        )
        for w in range(workers)
    ]
    measured = drive(specs, target, READY_TIMEOUT_S)
    results = measured.results
    connected = sum(r["connected"] for r in results)
    span_s = (max(r["last_ns"] for r in results) - min(r["first_ns"] for r in results)) / 1e9
    before, after = measured.rss_before_kib, measured.rss_after_kib
    row = _base_row("connections", target, run, setup_s)
    row.update(
        count=count,
        connected=connected,
        failed=sum(r["failed"] for r in results),
        users=len(set(tokens)) if target.provisioner is not None else count,
        connect_per_s=round(connected / span_s, 1) if span_s > 0 else None,
        rss_before_kib=before,
        rss_after_kib=after,
        rss_per_conn_kib=(
            round((after - before) / count, 2)
            if before is not None and after is not None and count
            else None
        ),
        errors=_merge_errors(results),
    )
    return row
