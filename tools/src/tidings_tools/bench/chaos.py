"""``tidings bench chaos``: the resilient SDK through a network that breaks, measured.

The shape of the chaos test (tests/chaos/test_chaos.py) as a measurement.
``--clients`` users in direct pairs and groups of up to ten, each a
:class:`~tidings_client.ResilientClient` with the SDK's default settings,
talk to the server through a :class:`~tidings_tools.faults.proxy.FaultProxy` that
cuts links mid-stream (``--cut-rate``: the chance that a link is cut after a
random number of bytes, as an LTE hand-over does), stalls others without a
FIN (``--stall-rate``: a dead radio under a live socket, found only by
heartbeats) and delays every chunk (``--delay-ms`` + up to ``--jitter-ms``).
The ``--messages`` sends are paced over ``--seconds``, alternately to each
user's direct conversation and its group. A send the SDK gives up on
(attempts exhausted) is retried by the "app", as a real app would offer to.

Then the network heals (new links are clean, stalled links resume, every
client is woken up) and the clients converge on the server's history, both
phases bounded by ``--timeout``. One JSON row on stdout, a summary on stderr:

- ``first_attempt_success``: sends acknowledged on their first transmission
  (``MessageSent.failed_attempts == 0``, not learned from a sync, not retried
  by the app) / sends. A send queued while offline counts as first-attempt if
  its first transmission is acked: the SDK only counts transmissions;
- ``final_delivery_rate``: (recipient, message) pairs held by the recipients'
  stores after convergence / expected pairs (each send to every other member
  of its conversation);
- ``lost``: acknowledged sends missing from the server's history (or at
  another seq than their ack said); ``duplicates``: messages held twice (by
  the server or by a client); ``diverged``: client stores that differ from
  the server's history. All three must be 0;
- ``cuts``, ``stalls``, ``links``: faults the proxy injected, links it carried.

Without ``--url`` the command starts its own Tidings server (SQLite) with the
benchmark's limits and a short heartbeat (``--heartbeat-ms``), so that a
stalled link is found within the run; production's default is 25 s. With
``--url`` (and ``--pid``, for its CPU time) it uses a server you started.

``--baseline`` is not meaningful here and is rejected: the bare broadcast
server has no acknowledgements, outbox or sync, so there is nothing to
measure about resilience on it.

The exit code is 1 when an acknowledged message was lost, something was
duplicated, or the clients did not converge within the bound; 2 for bad
options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tidings_client import (
    Message,
    MessageSent,
    RequestTimeoutError,
    ResilientClient,
    SendFailed,
    TidingsHTTP,
)
from tidings_tools.bench.help import HelpFormatter
from tidings_tools.bench.provision import Account, Provisioner
from tidings_tools.bench.rows import failed_row
from tidings_tools.bench.servers import Server, cpu_seconds, start_tidings, wait_ready
from tidings_tools.faults.proxy import FaultPlan, FaultProxy

SCENARIO = "chaos"
TARGET = "tidings"

# Scenario defaults: the chaos test's shape (clients, messages, share of
# connections cut), run as a measurement.
CLIENTS = 50
MESSAGES = 2000
CUT_RATE = 0.1
STALL_RATE = 0.05
SEND_SECONDS = 10.0
SEED = 20261127
# Bytes within which a drawn cut or stall lands on its link (as in the chaos
# test): a user of a group of ten receives tens of KiB in a default run.
FAULT_WITHIN_KIB = 40
# Heartbeat and redelivery period of the server this command starts.
HEARTBEAT_MS = 2000
REDELIVERY_MS = 1000
# Bound on the run after the sends: acks under faults, then heal + convergence.
TIMEOUT_S = 120.0
# Share of --timeout spent waiting for acks while the faults go on.
ACK_PHASE_SHARE = 0.5
# Bound on the wait for every client's first connection before the sends.
ONLINE_TIMEOUT_S = 30.0
GROUP_SIZE = 10
# Poll period of the convergence and ack waits.
POLL_S = 0.05
# Messages per page when reading the server's history.
HISTORY_PAGE = 200
# Pages read per conversation at most (200,000 messages).
HISTORY_MAX_PAGES = 1000


@dataclass
class Member:
    account: Account
    direct: str
    group: str
    client: ResilientClient
    planned: int = 0
    send_times: dict[str, float] = field(default_factory=dict)
    sent_to: dict[str, str] = field(default_factory=dict)
    sent_offline: int = 0
    acked: dict[str, MessageSent] = field(default_factory=dict)
    ack_ms: list[float] = field(default_factory=list)
    app_retried: set[str] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def conversations(self) -> tuple[str, str]:
        return (self.direct, self.group)


@dataclass(frozen=True)
class ChaosOptions:
    clients: int = CLIENTS
    messages: int = MESSAGES
    cut_rate: float = CUT_RATE
    stall_rate: float = STALL_RATE
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    seconds: float = SEND_SECONDS
    seed: int = SEED
    within_kib: int = FAULT_WITHIN_KIB
    timeout: float = TIMEOUT_S

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChaosOptions:
        return cls(
            clients=args.clients,
            messages=args.messages,
            cut_rate=args.cut_rate,
            stall_rate=args.stall_rate,
            delay_ms=args.delay_ms,
            jitter_ms=args.jitter_ms,
            seconds=args.seconds,
            seed=args.seed,
            within_kib=args.within_kib,
            timeout=args.timeout,
        )


# -- command line -------------------------------------------------------------------------


def register_chaos(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chaos`` scenario to ``tidings bench``'s sub-commands."""
    parser = subparsers.add_parser(
        SCENARIO,
        help="resilient clients through the fault proxy: first-attempt and final delivery",
        description=HELP,
        formatter_class=HelpFormatter,
    )
    add_arguments(parser)


HELP = """\
The resilient SDK through a network that breaks, measured.

--clients users in direct pairs and groups of up to ten, each a
ResilientClient with the SDK's default settings, talk to a server through a
fault proxy that cuts links mid-stream (--cut-rate: the chance that a link is
cut after a random number of bytes, as a mobile hand-over does), stalls others
without a FIN (--stall-rate: a dead radio under a live socket, found only by
heartbeats) and delays every chunk (--delay-ms plus up to --jitter-ms). The
--messages sends are paced over --seconds. Then the network heals and the
clients converge on the server's history, both phases bounded by --timeout.

One JSON row on stdout, a summary on stderr: first_attempt_success (sends
acknowledged on their first transmission / sends) and final_delivery_rate
((recipient, message) pairs held after convergence / expected pairs).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=CLIENTS, help="users (an even number)")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="sends in total")
    parser.add_argument(
        "--cut-rate", type=float, default=CUT_RATE, help="chance that a link is cut mid-stream"
    )
    parser.add_argument(
        "--stall-rate", type=float, default=STALL_RATE, help="chance that a link stalls (no FIN)"
    )
    parser.add_argument("--delay-ms", type=float, default=0.0, help="latency per chunk, each way")
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="extra random latency per chunk"
    )
    parser.add_argument(
        "--within-kib",
        type=int,
        default=FAULT_WITHIN_KIB,
        help="a drawn cut or stall lands within this many KiB of the link's traffic",
    )
    parser.add_argument(
        "--seconds", type=float, default=SEND_SECONDS, help="the sends are paced over this time"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="faults and pacing (replayable)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        help="bound on acks + convergence after the sends, in seconds",
    )
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        default=HEARTBEAT_MS,
        help="heartbeat of the server this command starts (finds stalled links)",
    )
    parser.add_argument("--url", help="a running Tidings node (default: start one)")
    parser.add_argument("--pid", type=int, help="PID of the --url node, for its CPU time")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="not meaningful for chaos and rejected: the bare broadcast server has no "
        "acknowledgements, outbox or sync, so it has no resilience to measure",
    )
    parser.set_defaults(func=run_chaos)


def check_args(args: argparse.Namespace) -> str | None:
    """Why the options do not fit together (None if they do)."""
    if args.baseline:
        return "--baseline is not meaningful for chaos (the bare server has no resilience)"
    if args.clients < 2 or args.clients % 2:
        return "--clients must be an even number >= 2 (users form direct pairs)"
    if args.messages < 1:
        return "--messages must be >= 1"
    for name in ("cut_rate", "stall_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            return f"--{name.replace('_', '-')} must be within 0..1"
    if args.delay_ms < 0 or args.jitter_ms < 0 or args.seconds < 0:
        return "--delay-ms, --jitter-ms and --seconds must be >= 0"
    if args.within_kib < 1 or args.timeout <= 0:
        return "--within-kib and --timeout must be positive"
    if args.pid is not None and not args.url:
        return "--pid goes with --url"
    if args.url and urlsplit(args.url).scheme != "http":
        return "--url must be http:// (the fault proxy forwards plain TCP)"
    return None


def run_chaos(args: argparse.Namespace) -> int:
    """Run the scenario once; print the row and the summary."""
    problem = check_args(args)
    if problem:
        print(f"tidings bench chaos: {problem}", file=sys.stderr)
        return 2
    options = ChaosOptions.from_args(args)
    # Dropped links are the point of the run: the SDK's warnings about them are expected.
    logging.getLogger("tidings_client").setLevel(logging.ERROR)
    server: Server | None = None
    try:
        if args.url:
            target = Server(TARGET, args.url, args.pid)
            wait_ready(target)
        else:
            extra = {
                "TIDINGS_HEARTBEAT_MS": str(args.heartbeat_ms),
                "TIDINGS_REDELIVERY_MS": str(REDELIVERY_MS),
            }
            server = target = start_tidings(extra)
        try:
            row = asyncio.run(measure(target, options))
        except Exception as exc:
            row = failed_row(SCENARIO, TARGET, 1, exc)
    finally:
        if server is not None:
            server.stop()
    row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(json.dumps(row), flush=True)
    print(summary(row), file=sys.stderr)
    return 0 if guarantees_held(row) else 1


def guarantees_held(row: dict[str, Any]) -> bool:
    return (
        not row.get("failed")
        and row.get("converged") is True
        and row.get("lost") == 0
        and row.get("duplicates") == 0
        and row.get("diverged") == 0
    )


def summary(row: dict[str, Any]) -> str:
    lines = ["", f"== tidings bench {SCENARIO} =="]
    if row.get("failed"):
        lines.append(f"{TARGET:>15}: failed: {row.get('failure')}")
        return "\n".join(lines)
    lines.append(
        f"{TARGET:>15}: first-attempt success {row['first_attempt_success']:.2%} "
        f"({row['acked_first_attempt']}/{row['sent']}), final delivery "
        f"{row['final_delivery_rate']:.2%} ({row['delivered']}/{row['expected']})"
    )
    lines.append(
        f"{'':>15}  lost {row['lost']}, duplicates {row['duplicates']}, diverged "
        f"{row['diverged']}; {row['cuts']} cuts + {row['stalls']} stalls over {row['links']} "
        f"links; converged in {row['convergence_s']} s after healing ({row['seconds']} s in all)"
    )
    if row["errors"]:
        listed = ", ".join(f"{k} x{v}" for k, v in row["errors"].items())
        lines.append(f"{'':>15}  errors: {listed}")
    if not guarantees_held(row):
        lines.append(f"{'':>15}  GUARANTEE BROKEN (lost, duplicated, diverged or not converged)")
    return "\n".join(lines)


# -- the measurement ----------------------------------------------------------------------


def _groups(accounts: list[Account]) -> list[list[Account]]:
    """Groups of GROUP_SIZE in order; a remainder of one joins the group before it."""
    groups = [accounts[i : i + GROUP_SIZE] for i in range(0, len(accounts), GROUP_SIZE)]
    if len(groups) > 1 and len(groups[-1]) < 2:
        groups[-2].extend(groups.pop())
    return groups


async def _history(http: TidingsHTTP, cid: str) -> list[Message]:
    messages: list[Message] = []
    after = 0
    for _ in range(HISTORY_MAX_PAGES):
        page = await http.history(cid, after_seq=after, limit=HISTORY_PAGE)
        if not page:
            break
        messages.extend(page)
        after = page[-1].seq
    return messages


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 3)


async def measure(server: Server, options: ChaosOptions) -> dict[str, Any]:
    """Set up, send through the faults, heal, converge, and count."""
    setup_started = time.monotonic()
    provisioner = Provisioner(server.url)
    accounts = await provisioner.ensure_accounts(options.clients)
    pairs = [(accounts[i], accounts[i + 1]) for i in range(0, len(accounts), 2)]
    directs = await provisioner.directs(pairs)
    group_of: dict[str, str] = {}
    members_of: dict[str, list[str]] = {}
    for cid, (a, b) in zip(directs, pairs, strict=True):
        members_of[cid] = [a.user_id, b.user_id]
    async with aiohttp.ClientSession() as session:
        for number, group in enumerate(_groups(accounts)):
            http = TidingsHTTP(server.url, group[0].token, session=session)
            conversation = await http.create_group(
                f"bench chaos {options.seed} #{number}", [a.user_id for a in group[1:]]
            )
            members_of[conversation.conversation_id] = [a.user_id for a in group]
            for account in group:
                group_of[account.user_id] = conversation.conversation_id

    url = urlsplit(server.url)
    plan = FaultPlan(
        cut_probability=options.cut_rate,
        cut_within_bytes=options.within_kib * 1024,
        stall_probability=options.stall_rate,
        stall_within_bytes=options.within_kib * 1024,
        delay_s=options.delay_ms / 1000,
        jitter_s=options.jitter_ms / 1000,
    )
    proxy = FaultProxy(url.hostname or "127.0.0.1", url.port or 80, plan, seed=options.seed)
    await proxy.start()
    ws_url = f"ws://127.0.0.1:{proxy.port}/v1/ws"
    members = [
        Member(
            account=account,
            direct=directs[i // 2],
            group=group_of[account.user_id],
            client=ResilientClient(ws_url, account.token, client_name="tidings-bench-chaos"),
            planned=options.messages // options.clients + (i < options.messages % options.clients),
        )
        for i, account in enumerate(accounts)
    ]
    rng = random.Random(options.seed)
    cpu_before = cpu_seconds(server.pid)
    errors: dict[str, int] = {}
    sent = 0
    acked = 0
    acked_all = asyncio.Event()

    async def listen(member: Member) -> None:
        nonlocal acked
        while True:  # until cancelled at the end of the run
            event = await member.client.next_event()
            if isinstance(event, MessageSent):
                if event.client_msg_id in member.acked:
                    continue
                member.acked[event.client_msg_id] = event
                started = member.send_times.get(event.client_msg_id)
                if started is not None:
                    member.ack_ms.append((time.monotonic() - started) * 1000)
                acked += 1
                if acked >= options.messages:
                    acked_all.set()
            elif isinstance(event, SendFailed):
                if event.retryable:
                    member.app_retried.add(event.client_msg_id)
                    member.client.retry(event.client_msg_id)  # the app retries
                else:
                    key = f"rejected:{event.code}"
                    errors[key] = errors.get(key, 0) + 1

    async def send_all(member: Member, start: float) -> None:
        nonlocal sent
        count = member.planned
        for n in range(count):
            # Evenly spread over the send phase, each send at a random point of its slot.
            due = start + options.seconds * (n + rng.random()) / max(1, count)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            cid = member.conversations[n % 2]
            if not member.client.online:
                member.sent_offline += 1
            cmid = member.client.send(cid, f"{member.account.username} #{n}")
            member.send_times[cmid] = time.monotonic()
            member.sent_to[cmid] = cid
            sent += 1

    listeners = [asyncio.create_task(listen(m)) for m in members]
    try:
        for member in members:
            await member.client.start()
        for member in members:
            with contextlib.suppress(RequestTimeoutError):
                await member.client.wait_online(ONLINE_TIMEOUT_S)
        setup_s = time.monotonic() - setup_started

        started = time.monotonic()
        await asyncio.gather(*(send_all(m, started) for m in members))
        send_s = time.monotonic() - started
        deadline = time.monotonic() + options.timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked_all.wait(), options.timeout * ACK_PHASE_SHARE)
        acked_under_faults = acked

        # The network heals; every client converges on the server's history.
        healed = time.monotonic()
        proxy.plan = FaultPlan()
        for link in proxy.links:
            link.resume()
        for member in members:
            member.client.wake_up()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acked_all.wait(), max(0.0, deadline - time.monotonic()))

        history: dict[str, list[Message]] = {}
        async with aiohttp.ClientSession() as session:
            for member in members:
                http = TidingsHTTP(server.url, member.account.token, session=session)
                for cid in member.conversations:
                    if cid not in history:
                        history[cid] = await _history(http, cid)

        def diverging() -> list[tuple[Member, str]]:
            return [
                (m, cid)
                for m in members
                for cid in m.conversations
                if [(x.seq, x.message_id) for x in m.client.store.messages(cid)]
                != [(x.seq, x.message_id) for x in history[cid]]
            ]

        converged = False
        while time.monotonic() < deadline:
            if not diverging():
                converged = True
                break
            await asyncio.sleep(POLL_S)
        finished = time.monotonic()
        held = {
            (m.account.user_id, cid): m.client.store.messages(cid)
            for m in members
            for cid in m.conversations
        }
        diverged = len(diverging())
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for member in members:
            await member.client.close()
        await proxy.close()
    cpu_after = cpu_seconds(server.pid)

    # Acknowledged sends: each in the history at the seq its ack gave.
    at_seq = {(cid, m.seq): m for cid, ms in history.items() for m in ms}
    lost = 0
    for member in members:
        for cmid, ack in member.acked.items():
            stored = at_seq.get((ack.conversation_id, ack.seq))
            if stored is None or stored.client_msg_id != cmid:
                lost += 1
    # Duplicates: a send twice in the server's history, or a message twice in a store.
    duplicates = 0
    for messages in history.values():
        keys = [(m.sender_id, m.client_msg_id) for m in messages]
        duplicates += len(keys) - len(set(keys))
    for messages in held.values():
        ids = [m.message_id for m in messages]
        duplicates += len(ids) - len(set(ids))
    # Delivery: this run's sends, held by every other member of their conversation.
    ours = {(m.account.user_id, cmid) for m in members for cmid in m.sent_to}
    by_key = {
        (m.sender_id, m.client_msg_id): (cid, m.message_id)
        for cid, ms in history.items()
        for m in ms
    }
    sends_per_conversation: dict[str, int] = {}
    for member in members:
        for cid in member.sent_to.values():
            sends_per_conversation[cid] = sends_per_conversation.get(cid, 0) + 1
    expected = sum(
        count * (len(members_of[cid]) - 1) for cid, count in sends_per_conversation.items()
    )
    delivered = 0
    for (user_id, cid), messages in held.items():
        for message in messages:
            key = (message.sender_id, message.client_msg_id)
            genuine = by_key.get(key) == (cid, message.message_id)
            if key in ours and message.sender_id != user_id and genuine:
                delivered += 1

    first_attempt = sum(
        1
        for m in members
        for cmid, ack in m.acked.items()
        if ack.failed_attempts == 0 and not ack.duplicate and cmid not in m.app_retried
    )
    ack_ms = [x for m in members for x in m.ack_ms]
    server_cpu = (
        round(cpu_after - cpu_before, 2)
        if cpu_before is not None and cpu_after is not None
        else None
    )
    return {
        "scenario": SCENARIO,
        "target": TARGET,
        "run": 1,
        "clients": options.clients,
        "messages": options.messages,
        "cut_rate": options.cut_rate,
        "stall_rate": options.stall_rate,
        "delay_ms": options.delay_ms,
        "jitter_ms": options.jitter_ms,
        "seed": options.seed,
        "sent": sent,
        "acked": acked,
        "acked_first_attempt": first_attempt,
        "first_attempt_success": round(first_attempt / sent, 4) if sent else None,
        "acked_under_faults": acked_under_faults,
        "acked_via_sync": sum(1 for m in members for a in m.acked.values() if a.duplicate),
        "app_retries": sum(len(m.app_retried) for m in members),
        "sent_offline": sum(m.sent_offline for m in members),
        "expected": expected,
        "delivered": delivered,
        "final_delivery_rate": round(delivered / expected, 4) if expected else None,
        "lost": lost,
        "duplicates": duplicates,
        "diverged": diverged,
        "converged": converged,
        "cuts": proxy.cuts,
        "stalls": proxy.stalls,
        "links": len(proxy.links),
        "ack_p50_ms": _percentile(ack_ms, 0.5),
        "ack_p99_ms": _percentile(ack_ms, 0.99),
        "ack_max_ms": round(max(ack_ms), 3) if ack_ms else None,
        "setup_s": round(setup_s, 2),
        "send_s": round(send_s, 2),
        "convergence_s": round(finished - healed, 2),
        "seconds": round(finished - started, 2),
        "server_cpu_s": server_cpu,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m tidings_tools.bench.chaos [options]``: the scenario on its own."""
    parser = argparse.ArgumentParser(
        prog="tidings bench chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_chaos(args)


if __name__ == "__main__":
    raise SystemExit(main())
