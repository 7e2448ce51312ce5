"""The restart storm's cluster: nodes with admission control on, restartable on their port,
sharing one port with ``SO_REUSEPORT`` or behind :class:`~tidings_tools.faults.balancer.Balancer`
processes.

Why not :func:`tidings_tools.bench.cluster.start_cluster` as is: the storm must run
the nodes with handshake admission control at a realistic rate (the other
scenarios lift it, :data:`~tidings_tools.bench.servers.TIDINGS_BENCH_ENV`), and it
must start a killed node again *on the same port*, so that the balancers,
which know the nodes by address, send clients to it again (or, with
``SO_REUSEPORT``, so that the kernel does). The database, Redis prefix and
cleanup are :mod:`tidings_tools.bench.cluster`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidings_tools.bench.cluster import REDIS_PREFIX, Cluster, create_database
from tidings_tools.bench.servers import (
    READY_TIMEOUT_S,
    TIDINGS_BENCH_ENV,
    Server,
    free_port,
    wait_ready,
)

# Client connections per balancer process: each costs it two sockets, and a
# process may hold at most ~15,000 here.
CLIENTS_PER_BALANCER = 7000
# How long a balancer gets to listen, and to exit after SIGTERM.
BALANCER_READY_S = 20.0
STOP_TIMEOUT_S = 15.0
# A killed node's exit is immediate; a draining one waits for sends in flight
# (TIDINGS_DRAIN_TIMEOUT_MS, 15 s by default) before it closes and exits.
EXIT_TIMEOUT_S = 40.0


# What `tidings serve` prints once its site listens (after the store is open).
LISTENING_LINE = b"tidings listening on "
LISTEN_POLL_S = 0.1


def node_env(
    cluster: Cluster, rate: float, burst: int, concurrency: int, reuse_port: bool
) -> dict[str, str]:
    env = {
        **TIDINGS_BENCH_ENV,
        "TIDINGS_STORE": cluster.store_url,
        "TIDINGS_HANDSHAKE_RATE_PER_S": str(rate),
        "TIDINGS_HANDSHAKE_BURST": str(burst),
        "TIDINGS_HANDSHAKE_CONCURRENCY": str(concurrency),
        "TIDINGS_REUSE_PORT": "1" if reuse_port else "0",
    }
    if cluster.redis_url and cluster.prefix:
        env |= {"TIDINGS_BUS": cluster.redis_url, "TIDINGS_BUS_PREFIX": cluster.prefix}
    return env


def start_node(env: dict[str, str], port: int, target: str = "tidings-cluster") -> Server:
    """``python -m tidings serve`` on `port` with its own data directory; wait until ready."""
    workdir = tempfile.TemporaryDirectory(prefix="tidings-storm-")
    command = [
        sys.executable,
        *("-m", "tidings", "serve", "--port", str(port)),
        *("--data-dir", str(Path(workdir.name) / "data")),
    ]
    with open(Path(workdir.name) / "server.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    server = Server(target, f"http://127.0.0.1:{port}", process.pid, process, workdir)
    try:
        if env.get("TIDINGS_REUSE_PORT") == "1":
            # /healthz on a shared port may be answered by another node.
            _wait_listening(server)
        else:
            wait_ready(server)
    except BaseException:
        tail = server.log_tail()
        server.stop()
        if tail:
            print(f"--- node output ---\n{tail}", file=sys.stderr)
        raise
    return server


def _wait_listening(server: Server) -> None:
    """Until the node's log says it listens (bounded); fail early if it exits."""
    assert server.workdir is not None
    assert server.process is not None
    path = Path(server.workdir.name) / "server.log"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"node exited with {server.process.returncode}")
        with contextlib.suppress(OSError):
            if LISTENING_LINE in path.read_bytes():
                return
        time.sleep(LISTEN_POLL_S)
    raise TimeoutError(f"node not listening within {READY_TIMEOUT_S} s")


def start_storm_cluster(
    count: int,
    admin_url: str,
    redis_url: str,
    admission: tuple[float, int, int],
    reuse_port: bool,
) -> tuple[Cluster, dict[str, str]]:
    """A fresh database, a Redis prefix and `count` nodes with admission control on
    (`admission`: rate per second, burst, concurrency); with `reuse_port` they all
    listen on one port."""
    database = asyncio.run(create_database(admin_url))
    prefix = f"{REDIS_PREFIX}{secrets.token_hex(6)}:"
    cluster = Cluster([], admin_url, database, redis_url, prefix)
    env = node_env(cluster, *admission, reuse_port)
    shared = free_port()
    try:
        for _ in range(count):  # one at a time: the first migrates the database
            cluster.nodes.append(start_node(env, shared if reuse_port else free_port()))
    except BaseException:
        cluster.stop()
        raise
    return cluster, env


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def stop_node(server: Server, graceful: bool) -> float:
    """kill -9 (or SIGTERM, and let it drain) one node by PID; seconds until it exited."""
    process = server.process
    assert process is not None
    start = time.monotonic()
    if graceful:
        process.send_signal(signal.SIGTERM)
    else:
        process.kill()
    try:
        process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    elapsed = time.monotonic() - start
    server.process = None
    if server.workdir is not None:
        server.workdir.cleanup()
        server.workdir = None
    return elapsed


class Balancers:
    """``python -m tidings_tools.faults.balancer`` processes before the nodes, stopped by PID."""

    def __init__(self, count: int, targets: list[tuple[str, int]]) -> None:
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logdir = tempfile.TemporaryDirectory(prefix="tidings-storm-lb-")
        to = ",".join(f"{h}:{p}" for h, p in targets)
        try:
            for i in range(count):
                port = free_port()
                with open(Path(self.logdir.name) / f"balancer-{i}.log", "wb") as log:
                    process = subprocess.Popen(
                        [
                            *(sys.executable, "-m", "tidings_tools.faults.balancer"),
                            *("--listen", str(port), "--to", to),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                self.processes.append(process)
                self.ports.append(port)
                self._wait_listening(process, port)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + BALANCER_READY_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"balancer exited with {process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
                return
            time.sleep(0.1)
        raise TimeoutError(f"balancer not listening on {port} within {BALANCER_READY_S} s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self.processes = []
        self.logdir.cleanup()
