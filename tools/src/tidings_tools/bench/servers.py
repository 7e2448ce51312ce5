"""Starting, probing and stopping the servers under test, and reading their /proc figures.

Why subprocesses: the server must not share a process (or a GIL, or an event
loop) with the load generator, and its CPU time and memory must be readable
on their own from ``/proc/PID``. Each server gets a free loopback port and
its own temporary data directory, and is stopped by its PID at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# How long a server may take to answer GET /healthz after it is started
# (Tidings runs its migrations first).
READY_TIMEOUT_S = 60.0
# Pause between readiness polls.
READY_POLL_S = 0.1
# How long a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15.0
# Limits lifted for a benchmark: the defaults (50 sends/s per user, 500
# frames/s per connection, 1,000 handshakes/s per node) protect a real server
# from abusive clients and reconnect storms, and a benchmark deliberately is
# one. Everything else stays at its default.
TIDINGS_BENCH_ENV = {
    "TIDINGS_HANDSHAKE_RATE_PER_S": "1000000000",
    "TIDINGS_HANDSHAKE_BURST": "1000000000",
    "TIDINGS_HANDSHAKE_CONCURRENCY": "1000000000",
    "TIDINGS_SEND_RATE_PER_S": "1000000000",
    "TIDINGS_SEND_BURST": "1000000000",
    "TIDINGS_FRAME_RATE_PER_S": "1000000000",
    "TIDINGS_FRAME_BURST": "1000000000",
    "TIDINGS_LOG_LEVEL": "warning",
    # Cheap argon2 for the benchmark's own server: registering and logging in
    # 1,000 accounts at the production cost (64 MiB, 3 passes) takes minutes of
    # setup, and no measured path hashes a password (tokens are checked by
    # SHA-256). A server given with --url keeps whatever it was started with.
    "TIDINGS_PASSWORD_HASH_MEMORY_KIB": "256",
    "TIDINGS_PASSWORD_HASH_TIME_COST": "1",
}
# Listen backlog of the baseline's socket (as baseline.LISTEN_BACKLOG, which
# the server applies again when it starts serving on the inherited socket).
BASELINE_BACKLOG = 4096
# Last lines of a failed server's output shown in the error.
LOG_TAIL_CHARS = 4000

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Server:
    """A server under test: where it listens, and its PID when it runs on this machine."""

    target: str
    url: str
    pid: int | None
    process: subprocess.Popen[bytes] | None = None
    workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def ws_url(self) -> str:
        base = self.url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :] + "/v1/ws"
        return "ws://" + base.removeprefix("http://") + "/v1/ws"

    def log_tail(self) -> str:
        if self.workdir is None:
            return ""
        path = Path(self.workdir.name) / "server.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        return ""

    def stop(self) -> None:
        """SIGTERM by PID, wait (bounded), then SIGKILL; remove the data directory."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_tidings(extra_env: dict[str, str] | None = None, target: str = "tidings") -> Server:
    """`python -m tidings serve` on a free port, with its own data directory.

    `extra_env` adds settings (``TIDINGS_STORE``, ``TIDINGS_BUS``, ... for a
    node of a cluster) to the benchmark's own (:data:`TIDINGS_BENCH_ENV`).
    """
    workdir = tempfile.TemporaryDirectory(prefix="tidings-bench-")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tidings",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(Path(workdir.name) / "data"),
    ]
    return _start(target, command, port, workdir, {**TIDINGS_BENCH_ENV, **(extra_env or {})})


def start_baseline() -> Server:
    """The bare aiohttp broadcast server (:mod:`tidings_tools.bench.baseline`) on a free port.

    The listening socket is bound here and inherited by the server (``--fd``):
    no window between choosing the port and binding it, in which another
    process could take the port and answer the readiness probe in its place.
    """
    workdir = tempfile.TemporaryDirectory(prefix="tidings-baseline-")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(BASELINE_BACKLOG)
        port: int = sock.getsockname()[1]
        fd = sock.fileno()
        command = [sys.executable, "-m", "tidings_tools.bench.baseline", "--fd", str(fd)]
        # The child holds its own copy of the socket; this one closes on leaving.
        return _start("baseline", command, port, workdir, {}, pass_fds=(fd,))


def _start(
    target: str,
    command: list[str],
    port: int,
    workdir: tempfile.TemporaryDirectory[str],
    extra_env: dict[str, str],
    pass_fds: tuple[int, ...] = (),
) -> Server:
    env = {**os.environ, **extra_env}
    with open(Path(workdir.name) / "server.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=pass_fds,
        )
    server = Server(target, f"http://127.0.0.1:{port}", process.pid, process, workdir)
    try:
        wait_ready(server)
    except BaseException:
        tail = server.log_tail()
        server.stop()
        if tail:
            print(f"--- {target} server output ---\n{tail}", file=sys.stderr)
        raise
    return server


def wait_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll GET /healthz until it answers 200 (bounded); fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    url = server.url.rstrip("/") + "/healthz"
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.target} server exited with {server.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(READY_POLL_S)
    raise TimeoutError(f"{server.target} server not ready at {url} within {timeout_s} s")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, from /proc/PID/stat (None if unknown)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int | None) -> int | None:
    """Resident set size of a process in KiB, from /proc/PID/status (None if unknown)."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None
