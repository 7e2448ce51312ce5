"""``tidings bench restart-storm``: restart one node of a cluster under N clients, measured.

The scale issue's scenario: N clients connected to a cluster of ``--nodes``
nodes on one machine (PostgreSQL + Redis, admission control ON at
``--handshake-rate`` and ``--handshake-concurrency`` per node) that share one
port with ``SO_REUSEPORT`` (``--front reuseport``) or sit behind balancer
processes (``--front balancer``), a few of them chatting in groups. Then one node
is killed (``--mode kill``: kill -9, then started again on the same port) or
drained (``--mode drain``: SIGTERM; it sends ``reconnect`` frames with
``after_ms`` over its drain window, closes with 1001 and exits; then it is
started again). Its clients reconnect (the kernel or the balancer sends them
to a live node), with the SDK's
default :class:`~tidings_client.backoff.Backoff` (``--backoff default``) or at
once and every 100 ms (``--backoff none``); ``--backoff default,none`` runs
both on the same cluster, one after the other.

Measured from the event (the kill or the SIGTERM): reconnect attempts,
successful handshakes, 503s and other failures per second; when 99% and 100%
of the affected clients (those whose connection dropped) were back *and*
synced; handshake latency (attempt -> ``welcome``); and messages lost: every
acknowledged message must be in the server's history, and every chatter must
hold every acknowledged message of its group after its final sync.

One JSON row per run on stdout, a human summary on stderr; ``--plot PATH``
draws attempts per second of every run of the invocation on one PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

import aiohttp

from tidings.settings import Settings
from tidings_tools.bench.cluster import DEFAULT_POSTGRES_ADMIN_URL, DEFAULT_REDIS_URL, Cluster
from tidings_tools.bench.help import HelpFormatter
from tidings_tools.bench.provision import Account, Provisioner
from tidings_tools.bench.runner import percentile, start_workers
from tidings_tools.bench.storm_cluster import (
    CLIENTS_PER_BALANCER,
    Balancers,
    port_of,
    start_node,
    start_storm_cluster,
    stop_node,
)
from tidings_tools.bench.storm_worker import (
    BACKOFF_DEFAULT,
    BACKOFF_NONE,
    BUCKET_NS,
    StormClientSpec,
    StormWorkerSpec,
    storm_worker_main,
)

SCENARIO = "restart-storm"
TARGET = "tidings-cluster"
MODES = ("kill", "drain")
BACKOFFS = (BACKOFF_DEFAULT, BACKOFF_NONE)
DEFAULT_CLIENTS = 6000
DEFAULT_NODES = 3
DEFAULT_SECONDS = 90.0
# Admission control as a production node runs it (settings.py: 1,000/s); the
# burst is one second's worth rather than the default two, so that the herd
# of one node's clients is not simply swallowed by the bucket.
DEFAULT_HANDSHAKE_RATE = 1000.0
DEFAULT_HANDSHAKE_BURST = 1000
DEFAULT_HANDSHAKE_CONCURRENCY = Settings().handshake_concurrency
FRONT_REUSEPORT = "reuseport"
FRONT_BALANCER = "balancer"
# Accounts behind the idle clients (they share tokens, as `connections` does).
DEFAULT_IDLE_USERS = 100
DEFAULT_GROUPS = 8
DEFAULT_GROUP_SIZE = 4
DEFAULT_CHAT_INTERVAL_S = 1.0
DEFAULT_PROCS = 2
# Sockets per worker process (under the 20,000 open files a process may have).
MAX_CLIENTS_PER_WORKER = 12_000
# Source addresses per worker (127.0.<worker + 1>.<1..n>): few sockets per
# address keep the kernel's search for a free port short, also when a killed
# node's connections linger in TIME_WAIT.
SOURCES_PER_WORKER = 16
# Chat (and count drops) this long before the event.
WARMUP_S = 3.0
# Keep observing at least this long after the event, even if all are back.
MIN_OBSERVE_S = 5.0
# ... and this long after the last affected client came back (late stragglers).
QUIET_S = 2.0
READY_TIMEOUT_S = 300.0
RESULT_TIMEOUT_S = 120.0
JOIN_TIMEOUT_S = 30.0
POLL_S = 0.25
HISTORY_PAGE = 200
MAX_HISTORY_PAGES = 10_000
HTTP_TIMEOUT_S = 30.0
# The per-second timeline of a row covers at most this many seconds.
TIMELINE_MAX_S = 600


HELP = """\
Restart one node of a cluster under N clients, and measure the recovery.

N clients connect to --nodes nodes on this machine (PostgreSQL and Redis,
admission control at --handshake-rate and --handshake-concurrency per node),
which share one port with SO_REUSEPORT (--front reuseport) or sit behind
balancer processes (--front balancer); a few of them chat in groups. Then one
node is killed (--mode kill: kill -9, then started again on the same port) or
drained (--mode drain: SIGTERM; it tells its clients to reconnect over its
drain window, then it is started again). Its clients reconnect with the SDK's
default backoff (--backoff default) or at once and every 100 ms (--backoff
none); --backoff default,none runs both on the same cluster.

Measured from the kill or the SIGTERM: reconnect attempts, handshakes, 503s
and failures per second; when 99% and 100% of the affected clients were back
and synced; handshake latency; and messages lost (every acknowledged message
must be in the server's history and in every chatter's store after its final
sync). One JSON row per run on stdout, a summary on stderr; --plot PATH draws
the attempts per second of every run on one PNG.
"""


def add_parser(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``restart-storm`` under ``tidings bench``."""
    p = scenarios.add_parser(
        SCENARIO,
        help="restart one node of a cluster under N clients; reconnects/s, time until back",
        description=HELP,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="connected clients")
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster nodes")
    p.add_argument("--mode", default="kill", help="kill, drain, or both: kill,drain")
    p.add_argument("--backoff", default=BACKOFF_DEFAULT, help="default, none, or default,none")
    p.add_argument("--backoff-base", type=float, default=1.0, help="first interval (s)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="observation window (s)")
    p.add_argument("--plot", help="PNG of reconnect attempts per second (matplotlib)")
    p.add_argument(
        "--handshake-rate", type=float, default=DEFAULT_HANDSHAKE_RATE, help="per node, per s"
    )
    p.add_argument("--handshake-burst", type=int, default=DEFAULT_HANDSHAKE_BURST, help="per node")
    p.add_argument(
        "--handshake-concurrency",
        type=int,
        default=DEFAULT_HANDSHAKE_CONCURRENCY,
        help="handshakes in progress per node",
    )
    p.add_argument(
        "--front",
        choices=(FRONT_REUSEPORT, FRONT_BALANCER),
        default=FRONT_REUSEPORT,
        help="how clients reach the nodes: one SO_REUSEPORT port, or balancer processes",
    )
    p.add_argument("--groups", type=int, default=DEFAULT_GROUPS, help="chatting groups")
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, help="members each")
    p.add_argument(
        "--chat-interval",
        type=float,
        default=DEFAULT_CHAT_INTERVAL_S,
        help="seconds between a chatter's sends",
    )
    p.add_argument(
        "--idle-users", type=int, default=DEFAULT_IDLE_USERS, help="accounts of the idle clients"
    )
    p.add_argument("--procs", type=int, default=DEFAULT_PROCS, help="load generators")
    p.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_ADMIN_URL, help="admin URL (a database is made)"
    )
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="the bus and presence")
    p.add_argument("--seed", type=int, default=1, help="replayable randomness")
    p.set_defaults(func=run)


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"--{what} takes {', '.join(allowed)} (comma-separated), got {text!r}")
    return items


def run(args: argparse.Namespace) -> int:
    try:
        modes = _split(args.mode, MODES, "mode")
        backoffs = _split(args.backoff, BACKOFFS, "backoff")
        if args.nodes < 2:
            raise ValueError("--nodes must be at least 2 (one is restarted)")
        if args.clients < 1 or args.seconds <= 0 or args.backoff_base <= 0:
            raise ValueError("--clients, --seconds and --backoff-base must be positive")
    except ValueError as exc:
        print(f"tidings bench: {exc}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    timelines: list[tuple[dict[str, Any], list[tuple[float, float]]]] = []
    failed = 0
    cluster: Cluster | None = None
    balancers: Balancers | None = None
    try:
        setup_start = time.monotonic()
        reuse_port = args.front == FRONT_REUSEPORT
        admission = (args.handshake_rate, args.handshake_burst, args.handshake_concurrency)
        cluster, env = start_storm_cluster(
            args.nodes, args.postgres_url, args.redis_url, admission, reuse_port
        )
        if reuse_port:
            ports = [port_of(cluster.nodes[0])]
        else:
            targets = [("127.0.0.1", port_of(n)) for n in cluster.nodes]
            balancers = Balancers(max(1, math.ceil(args.clients / CLIENTS_PER_BALANCER)), targets)
            ports = balancers.ports
        chatters, idle = _accounts(args, cluster)
        setup_s = time.monotonic() - setup_start
        for mode in modes:
            for backoff in backoffs:
                try:
                    row, fine = _run_one(args, cluster, env, ports, chatters, idle, mode, backoff)
                except Exception as exc:
                    failed += 1
                    row, fine = _failed_row(args, mode, backoff, exc), []
                row["setup_s"] = round(setup_s, 2)
                row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                rows.append(row)
                timelines.append((row, fine))
                print(json.dumps(row), flush=True)
    except Exception as exc:
        print(f"tidings bench restart-storm: setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if balancers is not None:
            balancers.stop()
        if cluster is not None:
            cluster.stop()
    if args.plot:
        from tidings_tools.bench.storm_plot import plot_storm

        plot_storm(timelines, args.plot)
    print(summary(rows), file=sys.stderr)
    return 1 if failed or any(r.get("lost") for r in rows) else 0


def _failed_row(
    args: argparse.Namespace, mode: str, backoff: str, exc: BaseException
) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {
        "scenario": SCENARIO,
        "target": TARGET,
        "mode": mode,
        "backoff": backoff,
        "clients": args.clients,
        "nodes": args.nodes,
        "failed": True,
        "errors": {f"run:{type(exc).__name__}": 1},
        "failure": (lines[-1] if lines else type(exc).__name__)[:500],
    }


# -- setup -------------------------------------------------------------------------


def _accounts(
    args: argparse.Namespace, cluster: Cluster
) -> tuple[list[tuple[Account, str]], list[Account]]:
    """Chatter accounts with their group, and the idle clients' shared accounts."""
    groups = args.groups
    size = args.group_size
    while groups * size > max(2, args.clients // 2) and groups > 1:
        groups -= 1
    if groups * size > args.clients:
        groups, size = 0, 0
    n_chat = groups * size
    n_idle = max(1, min(args.idle_users, args.clients - n_chat))
    provisioner = Provisioner(cluster.nodes[0].url)
    accounts = asyncio.run(provisioner.ensure_accounts(n_chat + n_idle))
    chat_accounts, idle = accounts[:n_chat], accounts[n_chat:]
    conversations = asyncio.run(
        _create_groups(
            cluster.nodes[0].url, [chat_accounts[g * size : (g + 1) * size] for g in range(groups)]
        )
    )
    chatters = [(a, conversations[i // size]) for i, a in enumerate(chat_accounts)]
    return chatters, idle


async def _create_groups(base_url: str, groups: list[list[Account]]) -> list[str]:
    out: list[str] = []
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for g, members in enumerate(groups):
            body = {
                "kind": "group",
                "title": f"storm group {g}",
                "members": [a.user_id for a in members[1:]],
            }
            headers = {"Authorization": f"Bearer {members[0].token}"}
            async with session.post(
                f"{base_url}/v1/conversations", json=body, headers=headers
            ) as r:
                if r.status >= 400:
                    raise RuntimeError(f"creating a group: {r.status} {(await r.text())[:300]}")
                out.append(str((await r.json())["conversation_id"]))
    return out


async def _history(base_url: str, conversation: str, token: str) -> dict[str, int]:
    """client_msg_id -> seq of every message of the conversation (paged, bounded)."""
    found: dict[str, int] = {}
    after = 0
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(MAX_HISTORY_PAGES):
            url = f"{base_url}/v1/conversations/{conversation}/messages"
            params = {"after_seq": str(after), "limit": str(HISTORY_PAGE)}
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, params=params, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"history: {r.status} {(await r.text())[:300]}")
                page = (await r.json())["messages"]
            for m in page:
                if m.get("client_msg_id"):
                    found[str(m["client_msg_id"])] = int(m["seq"])
                after = max(after, int(m["seq"]))
            if len(page) < HISTORY_PAGE:
                break
    return found


# -- one run -----------------------------------------------------------------------


def _recv(conn: Connection, expected: str, timeout_s: float) -> tuple[Any, ...]:
    """The next message of type `expected` (status messages in between are skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not conn.poll(left):
            raise TimeoutError(f"no {expected!r} from a storm worker within {timeout_s:.0f} s")
        try:
            message: tuple[Any, ...] = conn.recv()
        except EOFError:
            raise RuntimeError(f"a storm worker exited before sending {expected!r}") from None
        if message[0] == "error":
            raise RuntimeError(str(message[1]))
        if message[0] == expected:
            return message


def _run_one(
    args: argparse.Namespace,
    cluster: Cluster,
    env: dict[str, str],
    ports: list[int],
    chatters: list[tuple[Account, str]],
    idle: list[Account],
    mode: str,
    backoff: str,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    nonce = uuid.uuid4().hex[:12]
    clients: list[StormClientSpec] = [
        StormClientSpec(i, a.token, conv) for i, (a, conv) in enumerate(chatters)
    ]
    for i in range(len(clients), args.clients):
        clients.append(StormClientSpec(i, idle[i % len(idle)].token, None))
    workers = max(1, args.procs, math.ceil(args.clients / MAX_CLIENTS_PER_WORKER))
    specs = [
        StormWorkerSpec(
            index=w,
            ws_url=f"ws://127.0.0.1:{ports[w % len(ports)]}/v1/ws",
            local_addrs=tuple(f"127.0.{w + 1}.{k + 1}" for k in range(SOURCES_PER_WORKER)),
            clients=clients[w::workers],
            nonce=nonce,
            backoff=backoff,
            backoff_base=args.backoff_base,
            chat_interval_s=args.chat_interval,
            seed=args.seed * 1000 + w,
        )
        for w in range(workers)
    ]
    processes: list[SpawnProcess] = []
    conns: list[Connection] = []
    victim = 0
    try:
        start_workers(storm_worker_main, specs, "storm", processes, conns)
        ready = [_recv(c, "ready", READY_TIMEOUT_S) for c in conns]
        connected = sum(int(r[1]) for r in ready)
        for conn in conns:
            conn.send(("go",))
        time.sleep(WARMUP_S)
        # The event.
        node = cluster.nodes[victim]
        port = port_of(node)
        event_ns = time.time_ns()
        exit_s = stop_node(node, graceful=mode == "drain")
        cluster.nodes[victim] = start_node(env, port)
        restart_s = (time.time_ns() - event_ns) / 1e9
        # Observe until every affected client is back (and a little longer), or the window ends.
        status: dict[int, tuple[int, int]] = {}
        all_back_at: float | None = None
        end = event_ns / 1e9 + args.seconds
        while time.time() < end:
            for w, conn in enumerate(conns):
                while conn.poll(0):
                    message = conn.recv()
                    if message[0] == "status":
                        status[w] = (int(message[1]), int(message[2]))
                    elif message[0] == "error":
                        raise RuntimeError(str(message[1]))
            affected = sum(s[0] for s in status.values())
            back = sum(s[1] for s in status.values())
            since = time.time() - event_ns / 1e9
            if affected and back >= affected and since >= max(MIN_OBSERVE_S, restart_s):
                all_back_at = all_back_at or time.time()
                if time.time() - all_back_at >= QUIET_S:
                    break
            else:
                all_back_at = None
            time.sleep(POLL_S)
        observed_s = (time.time_ns() - event_ns) / 1e9
        for conn in conns:
            conn.send(("finish",))
        results = [_recv(c, "result", RESULT_TIMEOUT_S)[1] for c in conns]
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(JOIN_TIMEOUT_S)
        for conn in conns:
            conn.close()
    return _row(
        args,
        cluster,
        chatters,
        mode,
        backoff,
        results,
        event_ns,
        connected,
        exit_s,
        restart_s,
        observed_s,
    )


def _merge(results: list[dict[str, Any]], key: str) -> Counter[int]:
    total: Counter[int] = Counter()
    for r in results:
        total.update({int(k): int(v) for k, v in r[key].items()})
    return total


def _row(
    args: argparse.Namespace,
    cluster: Cluster,
    chatters: list[tuple[Account, str]],
    mode: str,
    backoff: str,
    results: list[dict[str, Any]],
    event_ns: int,
    connected: int,
    exit_s: float,
    restart_s: float,
    observed_s: float,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    affected = int(sum(r["affected"] for r in results))
    back_s: list[float] = sorted(
        float(b - event_ns) / 1e9 for r in results for b in r["back_ns"] if b >= 0
    )

    def back_at(q: float) -> float | None:
        need = math.ceil(q * affected)
        if affected == 0 or len(back_s) < need:
            return None
        return round(back_s[max(need, 1) - 1], 3)

    handshakes = sorted(ms for r in results for _, ms, _ in r["handshake_ms"])
    # The part until the 101 (TCP connect, accept, upgrade); the rest is hello -> welcome.
    upgrades = sorted(up for r in results for _, _, up in r["handshake_ms"])
    attempts = _merge(results, "attempts")
    successes = _merge(results, "successes")
    refused = _merge(results, "refused")
    failures = _merge(results, "failures")
    event_bucket = event_ns / BUCKET_NS
    seconds = min(TIMELINE_MAX_S, max(1, math.ceil(observed_s)))

    def second_of(bucket: int) -> int:
        """The second after the event that a bucket falls in (negative: before it)."""
        return math.floor((bucket - event_bucket) * BUCKET_NS / 1e9)

    def per_second(counter: Counter[int]) -> list[int]:
        out = [0] * seconds
        for bucket, n in counter.items():
            # The bucket holding the event starts before it: its attempts count in second 0.
            s = max(0, second_of(bucket))
            if bucket + 1 <= event_bucket:
                continue
            if 0 <= s < seconds:
                out[s] += n
        return out

    a, ok, r503, fail = (per_second(c) for c in (attempts, successes, refused, failures))
    # Where in the storm the slow handshakes are: p99 of those ending in each
    # second, beside the worst lag of the generators' own event loops then.
    latencies: list[list[float]] = [[] for _ in range(seconds)]
    lag = [0.0] * seconds
    for r in results:
        for bucket, late_ms in r["loop_lag_ms"].items():
            if 0 <= (s := second_of(bucket)) < seconds:
                lag[s] = max(lag[s], late_ms)
        for bucket, ms, _ in r["handshake_ms"]:
            if 0 <= (s := second_of(bucket)) < seconds:
                latencies[s].append(ms)
    back_per_s = [0] * seconds
    for t in back_s:
        if 0 <= t < seconds:
            back_per_s[math.floor(t)] += 1
    timeline = []
    cumulative = 0
    for s in range(seconds):
        cumulative += back_per_s[s]
        timeline.append(
            {
                "t": s,
                "attempts": a[s],
                "ok": ok[s],
                "refused_503": r503[s],
                "failed": fail[s],
                "back": cumulative,
                "handshake_p99_ms": _round(percentile(sorted(latencies[s]), 99)),
                "generator_lag_max_ms": round(lag[s], 1),
            }
        )
    # 100 ms resolution for the plot: (seconds after the event, attempts per second).
    fine = sorted(
        ((bucket - event_bucket) * BUCKET_NS / 1e9, n * 1e9 / BUCKET_NS)
        for bucket, n in attempts.items()
        if bucket + 1 > event_bucket
    )
    # Messages lost: acked but not in the history, or not held by a member
    # after its final sync (those acked before that sync was sent; a member
    # not back by the end is counted in final_sync_missing instead).
    acked: dict[str, dict[str, tuple[int, int]]] = {}
    for r in results:
        for conv, cmid, seq, at in r["acked"]:
            acked.setdefault(conv, {})[cmid] = (seq, at)
    token_of = {conv: a.token for a, conv in reversed(chatters)}
    base = cluster.nodes[-1].url
    lost_history = 0
    for conv, sent in acked.items():
        history = asyncio.run(_history(base, conv, token_of[conv]))
        lost_history += sum(1 for cmid, (seq, _) in sent.items() if history.get(cmid) != seq)
    missing_deliveries = 0
    for r in results:
        for _index, conv, synced_ns, held in r["held"]:
            if synced_ns is None:
                continue
            wanted = {seq for seq, at in acked.get(conv, {}).values() if at < synced_ns}
            missing_deliveries += len(wanted - set(held))
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    row: dict[str, Any] = {
        "scenario": SCENARIO,
        "target": TARGET,
        "mode": mode,
        "backoff": backoff,
        "backoff_base_s": args.backoff_base,
        "clients": args.clients,
        "nodes": args.nodes,
        "handshake_rate_per_s": args.handshake_rate,
        "handshake_burst": args.handshake_burst,
        "handshake_concurrency": args.handshake_concurrency,
        "front": args.front,
        "connected": connected,
        "affected": affected,
        "back": len(back_s),
        "back_99_s": back_at(0.99),
        "back_100_s": back_at(1.0),
        "handshake_p50_ms": _round(percentile(handshakes, 50)),
        "handshake_p99_ms": _round(percentile(handshakes, 99)),
        "upgrade_p99_ms": _round(percentile(upgrades, 99)),
        "generator_lag_max_ms": round(max(lag, default=0.0), 1),
        "handshakes": len(handshakes),
        "attempts": sum(attempts.values()),
        "peak_attempts_per_s": max(a) if a else 0,
        "refused_503": sum(refused.values()),
        "errors": dict(errors),
        "failed_attempts": sum(failures.values()),
        "reconnect_frames": sum(r["reconnect_frames"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "acked": sum(len(v) for v in acked.values()),
        "pending_left": sum(r["pending_left"] for r in results),
        "lost": lost_history + missing_deliveries,
        "lost_from_history": lost_history,
        "missing_deliveries": missing_deliveries,
        "final_sync_missing": sum(r["final_sync_missing"] for r in results),
        "node_exit_s": round(exit_s, 3),
        "node_back_s": round(restart_s, 3),
        "observed_s": round(observed_s, 1),
        "timeline": timeline,
    }
    return row, fine


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = ["", f"== tidings bench {SCENARIO} =="]
    for r in rows:
        label = f"{r['mode']:>5} / backoff {r['backoff']:<7}"
        if r.get("failed"):
            lines.append(f"{label}: FAILED: {r.get('failure')}")
            continue
        lines.append(
            f"{label}: {r['affected']} of {r['connected']} clients affected; back and synced: "
            f"99% {r['back_99_s']} s, 100% {r['back_100_s']} s; {r['attempts']} attempts "
            f"(peak {r['peak_attempts_per_s']}/s), {r['refused_503']} x 503; handshake p50 "
            f"{r['handshake_p50_ms']} ms, p99 {r['handshake_p99_ms']} ms; lost {r['lost']} of "
            f"{r['acked']} acked"
        )
        if r["errors"]:
            top = Counter(r["errors"]).most_common(5)
            lines.append("        errors: " + ", ".join(f"{k} x{v}" for k, v in top))
    return "\n".join(lines)
