"""``tidings bench SCENARIO [--baseline] [--url URL]``: the benchmark command.

It prints one JSON object per line on stdout (one row per target and run) and
then a short human summary on stderr, so that ``> rows.jsonl`` keeps only the
machine-readable part. With ``--baseline`` the same scenario also runs against
the bare aiohttp broadcast server (:mod:`tidings_tools.bench.baseline`) in the same
invocation; with ``--repeat N`` the targets alternate (tidings, baseline,
tidings, ...), so that slow drift of the machine affects both alike.

Without ``--url`` the command starts its own servers on free loopback ports
and stops them by PID at the end. Published figures, with date and machine,
belong in docs/benchmarks.md.

Which Tidings it measures:

- default: one node on SQLite (target ``tidings``);
- ``--store postgres``: one node on a fresh PostgreSQL database (target
  ``tidings``, rows marked ``store: postgres``);
- ``--cluster N``: N nodes on a fresh PostgreSQL database and a Redis bus of
  their own (target ``tidings-cluster``); the clients' connections are spread
  over the nodes round-robin, so a message sent on one node reaches most of
  its receivers through Redis. The database is dropped and the Redis keys
  deleted at the end;
- ``--url URL [--pid PID]``, repeated: nodes you started yourself (two or more
  form a ``tidings-cluster`` target).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

from tidings_tools.bench.chaos import register_chaos
from tidings_tools.bench.cluster import (
    BUS_MEMORY,
    DEFAULT_POSTGRES_ADMIN_URL,
    DEFAULT_REDIS_URL,
    STORE_POSTGRES,
    STORE_SQLITE,
    Cluster,
    start_cluster,
)
from tidings_tools.bench.push import register_push
from tidings_tools.bench.rows import failed_row
from tidings_tools.bench.runner import Target, run_connections, run_fanout, run_throughput
from tidings_tools.bench.search import add_parser as add_search_parser
from tidings_tools.bench.servers import Server, start_baseline, start_tidings, wait_ready
from tidings_tools.bench.storm import add_parser as add_storm_parser

TARGET_TIDINGS = "tidings"
TARGET_CLUSTER = "tidings-cluster"
TARGET_BASELINE = "baseline"

# Scenario defaults: the published figures in docs/benchmarks.md use these.
FANOUT_MEMBERS = 1000
FANOUT_MESSAGES = 200
FANOUT_RATE_PER_S = 20.0
THROUGHPUT_PAIRS = 500
THROUGHPUT_SECONDS = 15.0
# Sends in flight per throughput sender: with 500 pairs, 2,000 in flight keep a
# server busy at tens of thousands of messages a second without turning the
# latency figures into pure queueing delay.
THROUGHPUT_WINDOW = 4
CONNECTIONS_COUNT = 10_000
# Distinct accounts behind the idle connections: registering 10,000 argon2
# accounts would take minutes of setup; the connections share these tokens.
CONNECTIONS_USERS = 1000
# Load-generator processes (at least; more when a worker would exceed its socket budget).
DEFAULT_PROCS = 2
# Distinct error kinds listed per target in the summary.
ERRORS_SHOWN = 5
# Headline figure per scenario for the summary: (field, unit, lower is better).
HEADLINES: dict[str, tuple[str, str, bool]] = {
    "fanout": ("last_p95_ms", "ms p95 send -> last member", True),
    "throughput": ("msgs_per_s", "msgs/s acked and delivered", False),
    "connections": ("rss_per_conn_kib", "KiB RSS per idle connection", True),
}


# What `tidings bench --help` shows (plain text; the module docstring above is
# for developers).
HELP = """\
Measure a Tidings server under load, and compare it with a bare broadcast
server (the baseline) measured in the same run on the same machine.

Scenarios:
  fanout        one sender posts to one big group; measures the time from a
                send until the last member has the message
  throughput    many 1:1 pairs send as fast as acks allow; measures messages
                per second that were acknowledged and delivered
  connections   many idle authenticated connections; measures server memory
                (RSS) per connection and how fast connections open
  restart-storm, chaos, push
                a node restart under many clients, clients through a
                fault-injecting proxy, and push notifications to a group that
                is away (see their own --help)

Output: one JSON object per line on stdout, one per target and run, then a
short summary on stderr, so `> rows.jsonl` keeps only the JSON. Every row has
"scenario", "target" (tidings, tidings-cluster or baseline), "run" and "date";
a run that failed has "failed": true and "failure". The headline fields are
"last_p95_ms" (fanout, lower is better), "msgs_per_s" (throughput, higher is
better) and "rss_per_conn_kib" (connections, lower is better).

The figures depend on the machine, so read them against the baseline: with
--baseline the summary gives each Tidings median divided by the baseline
median of the same run (for latency and memory, 2.0 means twice the
baseline's). --repeat N alternates the targets so that drift affects both.

Without --url the command starts its own servers on free local ports and
stops them at the end. --store postgres or --cluster N run on PostgreSQL
(and Redis for a cluster) in a fresh database, dropped at the end.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` (with one sub-command per scenario) to the ``tidings`` CLI."""
    bench = subparsers.add_parser(
        "bench",
        help="measure fan-out latency, throughput and memory per connection",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")

    fanout = scenarios.add_parser(
        "fanout",
        help="one sender, one big group, send -> last member",
        description="One member of a group sends messages at a steady rate; each row gives "
        "the time from a send until the last member received it (last_p95_ms and other "
        "percentiles), delivered/expected counts and server CPU per delivery.",
    )
    fanout.add_argument(
        "--members", type=int, default=FANOUT_MEMBERS, help="group members (default: %(default)s)"
    )
    fanout.add_argument(
        "--messages", type=int, default=FANOUT_MESSAGES, help="messages sent (default: %(default)s)"
    )
    fanout.add_argument(
        "--rate",
        type=float,
        default=FANOUT_RATE_PER_S,
        help="messages per second (default: %(default)s)",
    )

    throughput = scenarios.add_parser(
        "throughput",
        help="1:1 pairs, acked-and-delivered msgs/s",
        description="Pairs of users send to each other for a fixed time; each row gives "
        "msgs_per_s (acknowledged and delivered) and latency percentiles such as p99_ms.",
    )
    throughput.add_argument(
        "--pairs", type=int, default=THROUGHPUT_PAIRS, help="sender pairs (default: %(default)s)"
    )
    throughput.add_argument(
        "--seconds",
        type=float,
        default=THROUGHPUT_SECONDS,
        help="how long to send (default: %(default)s)",
    )
    throughput.add_argument(
        "--window",
        type=int,
        default=THROUGHPUT_WINDOW,
        help="sends in flight per sender (default: %(default)s)",
    )

    connections = scenarios.add_parser(
        "connections",
        help="idle authenticated connections",
        description="Opens many authenticated connections and leaves them idle; each row "
        "gives rss_per_conn_kib (server memory per connection) and connect_per_s.",
    )
    connections.add_argument(
        "--count",
        type=int,
        default=CONNECTIONS_COUNT,
        help="connections opened (default: %(default)s)",
    )
    connections.add_argument(
        "--users",
        type=int,
        default=CONNECTIONS_USERS,
        help="accounts the connections share (default: %(default)s)",
    )

    for parser in (fanout, throughput, connections):
        parser.add_argument(
            "--baseline",
            action="store_true",
            help="also run against the bare baseline server, for ratios",
        )
        parser.add_argument(
            "--only-baseline", action="store_true", help="run against the baseline server only"
        )
        parser.add_argument(
            "--url",
            action="append",
            help="a running Tidings node (default: start one); repeat for the nodes of a cluster",
        )
        parser.add_argument(
            "--pid",
            type=int,
            action="append",
            help="PID of each --url node (same order), for CPU and RSS (default: not measured)",
        )
        parser.add_argument(
            "--cluster",
            type=int,
            default=0,
            metavar="N",
            help="start N nodes on a fresh PostgreSQL database and Redis, spread clients "
            "over them (default: %(default)s, one node)",
        )
        parser.add_argument(
            "--store",
            choices=(STORE_SQLITE, STORE_POSTGRES),
            help="store of the node(s) the tool starts (default: sqlite; postgres with --cluster)",
        )
        parser.add_argument(
            "--postgres-url",
            default=DEFAULT_POSTGRES_ADMIN_URL,
            help="PostgreSQL admin URL, a role that may CREATE and DROP DATABASE "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--redis-url", default=DEFAULT_REDIS_URL, help="Redis of the bus (default: %(default)s)"
        )
        parser.add_argument("--baseline-url", help="a running baseline server (default: start one)")
        parser.add_argument(
            "--repeat",
            type=int,
            default=1,
            help="runs per target, interleaved (default: %(default)s)",
        )
        parser.add_argument(
            "--procs",
            type=int,
            default=DEFAULT_PROCS,
            help="load-generator processes (default: %(default)s)",
        )
        parser.set_defaults(func=run)

    add_storm_parser(scenarios)
    register_chaos(scenarios)
    register_push(scenarios)
    add_search_parser(scenarios)


def _check_args(args: argparse.Namespace) -> str | None:
    """Why the options do not fit together (None if they do)."""
    urls: list[str] = args.url or []
    pids: list[int] = args.pid or []
    if pids and len(pids) != len(urls):
        return "give one --pid per --url (or none)"
    if args.cluster < 0:
        return "--cluster needs a positive number of nodes"
    if args.cluster and urls:
        return "--cluster starts its own nodes: do not combine it with --url"
    if args.cluster and args.store == STORE_SQLITE:
        return "a cluster needs a shared store: --cluster runs on PostgreSQL"
    if args.store and urls:
        return "--store applies to nodes the tool starts, not to --url"
    return None


def _targets(args: argparse.Namespace, started: list[Server | Cluster]) -> list[Target]:
    targets: list[Target] = []
    if not args.only_baseline:
        urls: list[str] = args.url or []
        pids: list[int | None] = list(args.pid or [None] * len(urls))
        if urls:
            name = TARGET_CLUSTER if len(urls) > 1 else TARGET_TIDINGS
            nodes = [Server(name, url, pid) for url, pid in zip(urls, pids, strict=True)]
            for node in nodes:
                wait_ready(node)
            labels: dict[str, Any] = {"nodes": len(nodes)} if len(nodes) > 1 else {}
            targets.append(Target(nodes[0], nodes, labels))
        elif args.cluster or args.store == STORE_POSTGRES:
            count = args.cluster or 1
            # One node on PostgreSQL needs no bus; a cluster (even of one) uses Redis.
            redis_url = args.redis_url if args.cluster else None
            name = TARGET_CLUSTER if args.cluster else TARGET_TIDINGS
            cluster = start_cluster(count, args.postgres_url, redis_url, name)
            started.append(cluster)
            labels = {"nodes": count, "store": STORE_POSTGRES, "bus": cluster.bus}
            targets.append(Target(cluster.nodes[0], cluster.nodes, labels, cluster))
        else:
            server = start_tidings()
            started.append(server)
            labels = {"nodes": 1, "store": STORE_SQLITE, "bus": BUS_MEMORY}
            targets.append(Target(server, [server], labels))
    if args.baseline or args.only_baseline:
        if args.baseline_url:
            server = Server(TARGET_BASELINE, args.baseline_url, None)
            wait_ready(server)
        else:
            server = start_baseline()
            started.append(server)
        targets.append(Target(server))
    return targets


def _run_one(args: argparse.Namespace, target: Target, run: int) -> dict[str, Any]:
    if args.scenario == "fanout":
        return run_fanout(target, args.members, args.messages, args.rate, args.procs, run)
    if args.scenario == "throughput":
        return run_throughput(target, args.pairs, args.seconds, args.window, args.procs, run)
    return run_connections(target, args.count, args.users, args.procs, run)


def run(args: argparse.Namespace) -> int:
    """Run the scenario against each target, `--repeat` times, and print rows and a summary."""
    problem = _check_args(args)
    if problem:
        print(f"tidings bench: {problem}", file=sys.stderr)
        return 2
    started: list[Server | Cluster] = []
    rows: list[dict[str, Any]] = []
    failed_runs = 0
    try:
        targets = _targets(args, started)
        for repeat in range(max(1, args.repeat)):
            for target in targets:
                try:
                    row = _run_one(args, target, repeat + 1)
                except Exception as exc:
                    # A run that could not finish still gets its row, so that
                    # the failure is visible on stdout next to the other rows.
                    failed_runs += 1
                    row = failed_row(args.scenario, target.name, repeat + 1, exc)
                row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for server in started:
            server.stop()
    print(summary(args.scenario, rows), file=sys.stderr)
    return 1 if failed_runs else 0


def summary(scenario: str, rows: list[dict[str, Any]]) -> str:
    """A few human lines: per target the median headline figure, and the ratio to baseline."""
    field, unit, _ = HEADLINES[scenario]
    lines = ["", f"== tidings bench {scenario} =="]
    medians: dict[str, float] = {}
    # Tidings targets first (in the order they ran), the baseline last.
    names = list(dict.fromkeys(r["target"] for r in rows if r["target"] != TARGET_BASELINE))
    for target in [*names, TARGET_BASELINE]:
        own = [r for r in rows if r["target"] == target]
        if not own:
            continue
        errors: Counter[str] = Counter()
        for r in own:
            errors.update(r.get("errors") or {})
        if errors:
            listed = ", ".join(f"{k} x{v}" for k, v in errors.most_common(ERRORS_SHOWN))
            lines.append(f"{target:>15}: errors: {listed}")
        values = [r[field] for r in own if r.get(field) is not None]
        if not values:
            lines.append(f"{target:>15}: no {field} (no run produced one)")
            continue
        medians[target] = round(statistics.median(values), 3)
        extra = ""
        own = [r for r in own if not r.get("failed")]
        if scenario == "fanout":
            extra = f", delivered {sum(r['delivered'] for r in own)}/"
            extra += f"{sum(r['expected'] for r in own)}"
            cpu = [r["cpu_us_per_delivery"] for r in own if r.get("cpu_us_per_delivery")]
            if cpu:
                extra += f", {statistics.median(cpu):.2f} us server CPU per delivery"
        elif scenario == "throughput":
            p99 = [r["p99_ms"] for r in own if r.get("p99_ms") is not None]
            if p99:
                extra = f", p99 {statistics.median(p99)} ms"
        else:
            rate = [r["connect_per_s"] for r in own if r.get("connect_per_s")]
            if rate:
                extra = f", {statistics.median(rate)} connects/s"
        lines.append(f"{target:>15}: {medians[target]} {unit} (median of {len(values)}){extra}")
    if medians.get(TARGET_BASELINE):
        for name in names:
            if name in medians:
                ratio = medians[name] / medians[TARGET_BASELINE]
                lines.append(f"          ratio: {name}/baseline = {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m tidings_tools.bench``), the same as ``tidings bench``."""
    parser = argparse.ArgumentParser(prog="tidings")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code
