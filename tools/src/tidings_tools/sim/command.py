"""``tidings sim reconnect-storm``: the reconnect storm after a restart, in numbers.

Prints a text histogram of reconnect attempts over time, the clients that
attempt in the first second (simulated and by formula), the time until 99%
and 100% are connected, the range of times after k backoff intervals, and the
same restart with no backoff (the thundering herd: every client retrying at
once, failure mode FM7 in docs/reliability.md). ``--csv PATH`` also
writes attempts per bucket as CSV; with ``--csv -`` the CSV goes to stdout and
the human summary to stderr, so that ``> storm.csv`` keeps only the CSV.
See docs/reliability.md for what the figures answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tidings_tools.sim.reconnect_storm import (
    DEFAULT_BUCKET_S,
    DEFAULT_CLIENTS,
    DEFAULT_SEED,
    StormConfig,
    no_backoff,
    report,
    simulate,
    write_csv,
)
from tidings_tools.sim.schedule import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    DEFAULT_FACTOR,
    DEFAULT_JITTER,
    FIRST_ATTEMPT_MODES,
    JITTER_MODES,
    BackoffPolicy,
)

# What `tidings sim --help` shows (plain text; the module docstring above is
# for developers).
HELP = """\
Simulate reliability scenarios without a server.

reconnect-storm: N clients lose their connection at the same moment (a server
restart) and reconnect with the client's backoff (an interval that grows by
--factor from --base up to --cap, with random jitter). It prints a text
histogram of reconnect attempts over time; how many clients attempt in the
first second, simulated and by formula; the time until 99% and 100% are
connected; the range of times after k backoff intervals; and the same restart
with no backoff, where every client retries at once, for comparison. Read the
backoff figures against that no-backoff run of the same simulation.

--csv PATH also writes attempts per time bucket as CSV; with --csv - the CSV
goes to stdout and the summary to stderr, so `> storm.csv` keeps only the CSV.
The same --seed gives the same figures.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sim`` (with one sub-command per simulation) to the ``tidings`` CLI."""
    sim = subparsers.add_parser(
        "sim",
        help="simulate reliability scenarios (reconnect storms)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulations = sim.add_subparsers(dest="simulation", required=True, metavar="SIMULATION")
    storm = simulations.add_parser(
        "reconnect-storm",
        help="when N clients reconnect after a server restart, with and without backoff",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    storm.add_argument(
        "--clients",
        type=int,
        default=DEFAULT_CLIENTS,
        help="connections dropped at once (default: %(default)s)",
    )
    storm.add_argument(
        "--base",
        type=float,
        default=DEFAULT_BASE_S,
        help="first backoff interval in seconds (default: %(default)s)",
    )
    storm.add_argument(
        "--factor",
        type=float,
        default=DEFAULT_FACTOR,
        help="growth factor per interval (default: %(default)s)",
    )
    storm.add_argument(
        "--cap",
        type=float,
        default=DEFAULT_CAP_S,
        help="longest interval in seconds (default: %(default)s)",
    )
    storm.add_argument(
        "--jitter",
        choices=JITTER_MODES,
        default=DEFAULT_JITTER,
        help="for a nominal interval d, equal: uniform in [0.5d, 1.5d] (±50%%); "
        "full: [0, d]; none: exactly d (default: %(default)s)",
    )
    storm.add_argument(
        "--first-attempt",
        choices=FIRST_ATTEMPT_MODES,
        default="after-interval",
        help="whether the first attempt is at t=0 or waits one jittered interval "
        "(default: %(default)s)",
    )
    storm.add_argument(
        "--accept-rate",
        type=int,
        default=None,
        help="handshakes the server admits per second (default: all); the rest back off",
    )
    storm.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)"
    )
    storm.add_argument(
        "--csv", help="write attempts per bucket as CSV to PATH ('-': stdout; default: no CSV)"
    )
    storm.add_argument(
        "--bucket-ms",
        type=int,
        default=round(DEFAULT_BUCKET_S * 1000),
        help="width of a histogram/CSV bucket in ms (default: %(default)s)",
    )
    storm.set_defaults(func=run_reconnect_storm)


def run_reconnect_storm(args: argparse.Namespace) -> int:
    """Simulate the configured storm and its no-backoff counterpart; print and write CSV."""
    try:
        policy = BackoffPolicy(args.base, args.factor, args.cap, args.jitter)
        config = StormConfig(
            clients=args.clients,
            policy=policy,
            first_attempt=args.first_attempt,
            accept_rate=args.accept_rate,
            seed=args.seed,
            bucket_s=args.bucket_ms / 1000,
        )
    except ValueError as exc:
        print(f"tidings sim reconnect-storm: {exc}", file=sys.stderr)
        return 2
    result = simulate(config, "backoff")
    herd = simulate(no_backoff(config), "no-backoff")
    summary = report(result, herd)
    if args.csv == "-":
        write_csv([result, herd], sys.stdout)
        print(summary, file=sys.stderr)
        return 0
    if args.csv:
        with Path(args.csv).open("w", newline="") as out:
            write_csv([result, herd], out)
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m tidings_tools.sim``), the same as ``tidings sim``."""
    parser = argparse.ArgumentParser(prog="tidings")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code
