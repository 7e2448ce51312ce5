"""``tidings bench push``: how fast a node tells a large group that is away,
and whether that holds anyone else's messages back.

One member of a group of ``--members`` sends ``--messages`` messages,
``--interval`` seconds apart. Every other member has one push subscription
(a webhook, or Web Push with keys made here) to a receiver in this process and
no live session, so each message makes ``members - 1`` notifications. The
node runs with ``delay_ms`` 0 and the change log and dispatcher polling every
50 ms, so the figures are the pipeline's (notifier, claims, encryption, HTTP),
not the waiting a deployment configures. Meanwhile a 1:1 pair on the same node
sends a message every ``PING_EVERY_S`` and times each acknowledgement.

Each row: notifications received and expected, duplicates, per message the
time from its acknowledgement to the last member's notification (p50, p95),
``notifications_per_s`` (per message, its notifications over that time; the
median over messages), node CPU per notification (over the whole run, the
pair's pings included), and the pair's ack latency (p50, p99) while the
notifications were going out. The
``baseline`` row: the same receiver taking as many POSTs of the same size
from a bare aiohttp client with the dispatcher's concurrency (64) in flight,
so ``notifications_per_s`` reads against ``posts_per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings_tools.bench.provision import Account, Provisioner
from tidings_tools.bench.rows import failed_row
from tidings_tools.bench.runner import percentile
from tidings_tools.bench.servers import Server, cpu_seconds, start_tidings, wait_ready

SCENARIO = "push"
MEMBERS = 1000
MESSAGES = 5
INTERVAL_S = 2.0
KINDS = ("webhook", "webpush", "none")
"""``none``: no subscriptions, the control for the pair's ack latency."""
# The dispatcher's default sends in flight per node (push setting concurrency).
CONCURRENCY = 64
PING_EVERY_S = 0.02
# How long after the last send the run waits for the last notification.
DRAIN_S = 120.0
PUSH_ENV = {
    "TIDINGS_PUSH_DELAY_MS": "0",
    "TIDINGS_PUSH_POLL_MS": "50",
    "TIDINGS_CHANGELOG_POLL_MS": "50",
    "TIDINGS_PUSH_WEBHOOK_ALLOW": "127.0.0.1/32",
}

HELP = """\
Push notifications to a large group that is away, measured.

One member of a group of --members sends --messages messages, --interval
seconds apart; every other member has a push subscription (--kind webhook or
webpush; none for a control run without) to a receiver in this process and no
live session. Meanwhile a 1:1 pair on the same node sends every 20 ms and
times its acks. With --baseline, a bare aiohttp client posts as many requests
of the same size to the same receiver with 64 in flight.

One JSON row per target on stdout, a summary on stderr: notifications_per_s
(a message's notifications over the time from its ack to its last one, median
over messages), last_p95_ms (a message's ack -> its last member's
notification), cpu_us_per_notification, ping_ack_p99_ms (the pair's acks
during the run) and, for the baseline, posts_per_s.
"""


@dataclass
class Receiver:
    """Counts what arrives, by path (one per member), with arrival times."""

    arrivals: dict[str, list[tuple[float, bytes]]] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    port: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{member}", self._take)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrivals.setdefault(request.match_info["member"], []).append((time.time(), body))
        self._arrived.set()
        return web.Response(status=201)

    def count(self) -> int:
        return sum(len(v) for v in self.arrivals.values())

    async def all_in(self, expected: int) -> None:
        """Return once ``expected`` notifications have arrived."""
        while self.count() < expected:
            self._arrived.clear()
            await self._arrived.wait()


@dataclass(frozen=True)
class BrowserKeys:
    """A member's Web Push keys: the public half subscribes, the private half
    decrypts what arrived (after the run, off the measured time)."""

    key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def make(cls) -> BrowserKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    def subscription(self) -> dict[str, str]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": _b64(point), "auth": _b64(self.auth)}

    def open(self, body: bytes) -> bytes:
        return bytes(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def _post(session: aiohttp.ClientSession, url: str, token: str, body: Any) -> Any:
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status >= 300:
            raise RuntimeError(f"POST {url}: {r.status} {(await r.text())[:300]}")
        return await r.json()


async def _ping(server: Server, a: Account, cid: str, stop: asyncio.Event) -> list[float]:
    """A's sends in the pair's conversation every PING_EVERY_S until ``stop``:
    each one's send -> ack, in ms."""
    ws_url = server.ws_url
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "hello", "token": a.token})
        await ws.receive_json()
        sent_at: dict[str, float] = {}
        number = 0
        while not stop.is_set():
            number += 1
            cmid = f"ping-{uuid.uuid4().hex}"
            sent_at[cmid] = time.perf_counter()
            frame = {
                "type": "send",
                "conversation_id": cid,
                "client_msg_id": cmid,
                "content": {"text": f"ping {number}"},
            }
            await ws.send_json(frame)
            deadline = time.perf_counter() + PING_EVERY_S
            while time.perf_counter() < deadline:
                try:
                    answer = await ws.receive_json(timeout=deadline - time.perf_counter())
                except TimeoutError:
                    break
                if answer.get("type") == "ack" and answer.get("client_msg_id") in sent_at:
                    started = sent_at.pop(answer["client_msg_id"])
                    latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure(
    server: Server, members: int, messages: int, interval_s: float, kind: str
) -> dict[str, Any]:
    setup_started = time.monotonic()
    receiver = Receiver()
    await receiver.start()
    try:
        provisioner = Provisioner(server.url)
        accounts = await provisioner.ensure_accounts(members + 2)
        group, pair = accounts[:members], accounts[members:]
        cid = await provisioner.group(group)
        [ping_cid] = await provisioner.directs([(pair[0], pair[1])])
        sender = group[0]
        async with aiohttp.ClientSession() as session:
            gate = asyncio.Semaphore(16)

            keys = {f"m{i}": BrowserKeys.make() for i in range(1, members)}

            async def subscribe(index: int, account: Account) -> None:
                url = f"http://127.0.0.1:{receiver.port}/m{index}"
                body: dict[str, Any] = {"kind": "webhook", "url": url}
                if kind == "webpush":
                    subscription = keys[f"m{index}"].subscription()
                    body = {"kind": "webpush", "endpoint": url, "keys": subscription}
                async with gate:
                    await _post(session, server.url + "/v1/push/subscriptions", account.token, body)

            if kind != "none":
                await asyncio.gather(*(subscribe(i, a) for i, a in enumerate(group[1:], 1)))
            setup_s = time.monotonic() - setup_started
            stop = asyncio.Event()
            ping = asyncio.create_task(_ping(server, pair[0], ping_cid, stop))
            await asyncio.sleep(1.0)  # the pair's connection settles
            cpu_before = cpu_seconds(server.pid)
            acked_at: list[float] = []
            for number in range(messages):
                body = {
                    "client_msg_id": f"push-{uuid.uuid4().hex}",
                    "content": {"text": f"news {number}", "mention_all": number == 0},
                }
                await _post(
                    session, f"{server.url}/v1/conversations/{cid}/messages", sender.token, body
                )
                acked_at.append(time.time())
                await asyncio.sleep(interval_s)
            expected = 0 if kind == "none" else (members - 1) * messages
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver.all_in(expected), DRAIN_S)
            cpu_after = cpu_seconds(server.pid)
            stop.set()
            latencies = sorted(await ping)
    finally:
        await receiver.stop()
    told = {
        member: [
            (at, _told(body if kind == "webhook" else keys[member].open(body)))
            for at, body in arrivals
        ]
        for member, arrivals in receiver.arrivals.items()
    }
    row = _row(told, acked_at, expected, latencies)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    row.update(
        kind=kind,
        members=members,
        messages=messages,
        setup_s=round(setup_s, 2),
        cpu_us_per_notification=None
        if cpu is None or not row["received"]
        else round(cpu / row["received"] * 1e6, 1),
    )
    return row


def _told(payload: bytes) -> int:
    """The seq a notification tells of."""
    return int(json.loads(payload)["seq"])


def _row(
    told: dict[str, list[tuple[float, int]]],
    acked_at: list[float],
    expected: int,
    pings: list[float],
) -> dict[str, Any]:
    """Counts and times from what each member was told: (arrival time, seq)."""
    seen: Counter[tuple[str, int]] = Counter()
    last_by_seq: dict[int, float] = {}
    for member, notes in told.items():
        for at, seq in notes:
            seen[(member, seq)] += 1
            last_by_seq[seq] = max(at, last_by_seq.get(seq, 0.0))
    per_seq = Counter(seq for seq in (s for _, s in seen))
    received = sum(len(notes) for notes in told.values())
    # The group's seqs: its creation entry first, then one per message sent.
    seqs = sorted(last_by_seq)[-len(acked_at) :]
    waves = [(last_by_seq[s] - at, per_seq[s]) for s, at in zip(seqs, acked_at, strict=False)]
    tails = sorted(tail * 1000 for tail, _ in waves)
    rates = sorted(count / tail for tail, count in waves if tail > 0)
    return {
        "scenario": SCENARIO,
        "target": "tidings",
        "run": 1,
        "expected": expected,
        "received": received,
        "duplicates": sum(n - 1 for n in seen.values()),
        "notifications_per_s": _round(percentile(rates, 50)),
        "last_p50_ms": _round(percentile(tails, 50)),
        "last_p95_ms": _round(percentile(tails, 95)),
        "ping_acks": len(pings),
        "ping_ack_p50_ms": _round(percentile(pings, 50)),
        "ping_ack_p99_ms": _round(percentile(pings, 99)),
        "errors": {},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def baseline(count: int, size: int) -> dict[str, Any]:
    """The receiver taking ``count`` POSTs of ``size`` bytes, CONCURRENCY in flight."""
    receiver = Receiver()
    await receiver.start()
    body = b"x" * size
    try:
        gate = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> None:
                async with (
                    gate,
                    session.post(f"http://127.0.0.1:{receiver.port}/m{i % 999}", data=body) as r,
                ):
                    await r.read()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            elapsed = time.perf_counter() - started
    finally:
        await receiver.stop()
    return {
        "scenario": SCENARIO,
        "target": "baseline",
        "run": 1,
        "posts": count,
        "posts_per_s": round(count / elapsed, 1),
        "errors": {},
    }


def register_push(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        SCENARIO,
        help="push notifications to a large group that is away",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--members", type=int, default=MEMBERS, help="group members")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="messages sent")
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between sends")
    parser.add_argument("--kind", choices=KINDS, default="webhook", help="subscription kind")
    parser.add_argument("--baseline", action="store_true", help="also run the bare POST baseline")
    parser.add_argument("--url", help="a running Tidings node started with the push settings above")
    parser.add_argument("--pid", type=int, help="PID of the --url node, for CPU")
    parser.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    if args.members < 2 or args.messages < 1:
        print("tidings bench push: needs --members 2+ and --messages 1+", file=sys.stderr)
        return 2
    server: Server | None = None
    rows: list[dict[str, Any]] = []
    try:
        if args.url:
            target = Server("tidings", args.url, args.pid)
            wait_ready(target)
        else:
            server = target = start_tidings(PUSH_ENV)
        try:
            measured = measure(target, args.members, args.messages, args.interval, args.kind)
            rows.append(asyncio.run(measured))
        except Exception as exc:
            rows.append(failed_row(SCENARIO, "tidings", 1, exc))
    finally:
        if server is not None:
            server.stop()
    if args.baseline:
        rows.append(asyncio.run(baseline((args.members - 1) * args.messages, 200)))
    for row in rows:
        row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        print(json.dumps(row), flush=True)
    print(summary(rows), file=sys.stderr)
    return (
        1
        if any(r.get("failed") or r.get("received", 0) < r.get("expected", 0) for r in rows)
        else 0
    )


def summary(rows: list[dict[str, Any]]) -> str:
    lines = ["", f"== tidings bench {SCENARIO} =="]
    rate = {r["target"]: r.get("notifications_per_s") or r.get("posts_per_s") for r in rows}
    for r in rows:
        if r.get("failed"):
            lines.append(f"{r['target']:>15}: failed: {r.get('failure')}")
        elif r["target"] == "baseline":
            lines.append(f"{'baseline':>15}: {r['posts_per_s']} POSTs/s")
        else:
            lines.append(
                f"{'tidings':>15}: {r['notifications_per_s']} notifications/s ({r['kind']}), "
                f"{r['received']}/{r['expected']} received, {r['duplicates']} duplicates, "
                f"last p95 {r['last_p95_ms']} ms, {r['cpu_us_per_notification']} us CPU each, "
                f"ping ack p99 {r['ping_ack_p99_ms']} ms"
            )
    ours, bare = rate.get("tidings"), rate.get("baseline")
    if ours and bare:
        lines.append(f"          ratio: tidings/baseline = {ours / bare:.2f}")
    return "\n".join(lines)
