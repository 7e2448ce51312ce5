"""Drain on SIGTERM without a thundering herd: 2,000 clients, some chatting.

Every client of the draining node gets ``reconnect`` with ``after_ms`` drawn
uniformly over the window, then a 1001 close; each reconnects to the other
node once its delay has passed (as the SDK does). The measured histograms of
the drawn delays and of the actual reconnect times must be spread over the
window; the node exits 0; every acknowledged send is stored.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import msgspec

from tests.cluster.support import Cluster, NodeProc, Peer, close_all, history
from tests.wire import Account, Http, Raw

CLIENTS = 2000
CHATTERS = 10  # in one group, sending all the time until their node drains
IDLE_ACCOUNTS = 40  # the other 1,990 connections are devices of these
WINDOW_MS = 3000
BUCKETS = 10
CONNECT_CONCURRENCY = 100  # handshakes in flight while the 2,000 connect
CHAT_BEFORE_S = 0.5  # chatting before SIGTERM
DRAIN_BOUND_S = WINDOW_MS / 1000 + 20  # reconnect frame, delay, reconnect; bounded
REFUSED_RETRIES = 5  # a 503 from the other node's admission control is retried


@dataclass
class Outcome:
    after_ms: int | None = None
    reason: str | None = None
    got_at: float | None = None  # monotonic time the reconnect frame arrived
    close_code: int | None = None
    started_at: float | None = None  # monotonic time the client began its reconnect
    reconnected_at: float | None = None  # monotonic time of the welcome from the other node
    refused: int = 0


async def _reconnect_elsewhere(
    session: aiohttp.ClientSession, target: NodeProc, token: str, outcome: Outcome
) -> None:
    """Wait out after_ms (from when the frame arrived), then hello on ``target``."""
    assert outcome.got_at is not None
    assert outcome.after_ms is not None
    delay = outcome.got_at + outcome.after_ms / 1000 - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    outcome.started_at = time.monotonic()
    for _ in range(REFUSED_RETRIES):
        try:
            raw, _ = await Raw.connect(session, target.ws_url, token)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 503:
                raise
            outcome.refused += 1
            retry_after = exc.headers.get("Retry-After", "1") if exc.headers else "1"
            await asyncio.sleep(float(retry_after))
            continue
        outcome.reconnected_at = time.monotonic()
        await raw.close()
        return


async def _idle(session: aiohttp.ClientSession, raw: Raw, token: str, target: NodeProc) -> Outcome:
    outcome = Outcome()
    async with asyncio.timeout(DRAIN_BOUND_S):
        while True:
            msg = await raw.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else raw.ws.close_code
                outcome.close_code = code if isinstance(code, int) else None
                break
            frame = msgspec.json.decode(msg.data)
            if frame["type"] == "reconnect":
                outcome.after_ms, outcome.reason = frame["after_ms"], frame["reason"]
                outcome.got_at = time.monotonic()
        if outcome.after_ms is not None:
            await _reconnect_elsewhere(session, target, token, outcome)
    return outcome


def _histogram(values: list[float], width: float) -> list[int]:
    counts = Counter(min(max(int(v // width), 0), BUCKETS - 1) for v in values)
    return [counts[b] for b in range(BUCKETS)]


async def test_sigterm_drain_of_2000_clients_spreads_reconnects_and_loses_nothing(
    cluster: Cluster,
) -> None:
    draining = await cluster.spawn(ready=False, TIDINGS_DRAIN_WINDOW_MS=str(WINDOW_MS))
    other = await cluster.spawn(ready=False)
    await asyncio.gather(cluster.wait_ready(draining), cluster.wait_ready(other))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        http = Http(session, other.http_url)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def account() -> Account:
            async with gate:
                return await http.account()

        chat_accounts = list(await asyncio.gather(*(account() for _ in range(CHATTERS))))
        idle_accounts = list(await asyncio.gather(*(account() for _ in range(IDLE_ACCOUNTS))))
        cid = await http.conversation(chat_accounts[0], "group", chat_accounts[1:])

        async def open_idle(i: int) -> tuple[Raw, str]:
            token = idle_accounts[i % IDLE_ACCOUNTS].token
            async with gate:
                raw, _ = await Raw.connect(session, draining.ws_url, token)
            return raw, token

        connect_started = time.monotonic()
        chatters = [await Peer.connect(session, draining, a) for a in chat_accounts]
        idle = list(await asyncio.gather(*(open_idle(i) for i in range(CLIENTS - CHATTERS))))
        connect_s = time.monotonic() - connect_started
        acked: dict[str, int] = {}
        sigterm_at = 0.0

        async def chat(peer: Peer) -> Outcome:
            outcome = Outcome()
            n = 0
            async with asyncio.timeout(DRAIN_BOUND_S):
                while not peer.closed.is_set() and peer.reconnect is None:
                    cmid = f"{peer.account.username}#{n}"
                    n += 1
                    try:
                        frame = await peer.send(cid, cmid)
                    except (ConnectionError, aiohttp.ClientError, TimeoutError):
                        break
                    if frame["type"] == "ack":
                        acked[cmid] = frame["seq"]
                await peer.closed.wait()
                if peer.reconnect is not None and peer.reconnect_at is not None:
                    outcome.after_ms = peer.reconnect["after_ms"]
                    outcome.reason = peer.reconnect["reason"]
                    outcome.got_at = peer.reconnect_at
                outcome.close_code = peer.close_code
                if outcome.after_ms is not None:
                    await _reconnect_elsewhere(session, other, peer.account.token, outcome)
            return outcome

        try:
            idle_tasks = [asyncio.create_task(_idle(session, r, t, other)) for r, t in idle]
            chat_tasks = [asyncio.create_task(chat(p)) for p in chatters]
            await asyncio.sleep(CHAT_BEFORE_S)
            assert acked, "the chatters got no ack before the drain"
            acked_before = len(acked)
            sigterm_at = time.monotonic()
            draining.terminate()
            outcomes = list(await asyncio.gather(*idle_tasks, *chat_tasks))
            exit_code = await draining.wait()
            exited_after = time.monotonic() - sigterm_at
            stored = await history(http, chat_accounts[0].token, cid)
        finally:
            await close_all(chatters)
            await asyncio.gather(*(r.close() for r, _ in idle), return_exceptions=True)

    assert exit_code == 0, draining.log_tail()
    # Everyone was told to come back later, within the window, then closed 1001.
    assert all(o.reason == "draining" for o in outcomes), Counter(o.reason for o in outcomes)
    delays = [o.after_ms for o in outcomes if o.after_ms is not None]
    assert len(delays) == CLIENTS
    assert all(0 <= d <= WINDOW_MS for d in delays)
    assert Counter(o.close_code for o in outcomes) == {1001: CLIENTS}
    share = CLIENTS // BUCKETS
    drawn = _histogram([float(d) for d in delays], WINDOW_MS / BUCKETS)
    # Reconnect times, from the SIGTERM, as the other node saw the hellos.
    actual_ms = [
        (o.reconnected_at - sigterm_at) * 1000 for o in outcomes if o.reconnected_at is not None
    ]
    lags_ms = sorted(
        (o.reconnected_at - o.got_at) * 1000 - o.after_ms
        for o in outcomes
        if o.reconnected_at is not None and o.got_at is not None and o.after_ms is not None
    )
    reconnected = _histogram(actual_ms, WINDOW_MS / BUCKETS)
    # When the clients knocked on the other node: what it is offered (the herd,
    # or not). Completion times above also carry the handshake's queueing on a
    # loaded 2-core box, so they are reported but not held to the 2x bound.
    attempts = _histogram(
        [(o.started_at - sigterm_at) * 1000 for o in outcomes if o.started_at is not None],
        WINDOW_MS / BUCKETS,
    )
    handshake_ms = sorted(
        (o.reconnected_at - o.started_at) * 1000
        for o in outcomes
        if o.reconnected_at is not None and o.started_at is not None
    )
    print(
        f"\ndrain of {CLIENTS} clients ({CHATTERS} chatting; connected in {connect_s:.1f} s):"
        f" node exited {exit_code} after {exited_after:.2f} s;"
        f"\n  drawn after_ms per {WINDOW_MS // BUCKETS} ms bucket: {drawn} (share {share})"
        f"\n  reconnect attempts per bucket after SIGTERM: {attempts}"
        f"\n  reconnects completed (welcome) per bucket after SIGTERM: {reconnected}"
        f" ({len(actual_ms)} reconnected, {sum(o.refused for o in outcomes)} refused with 503;"
        f" lag behind after_ms p50 {statistics.median(lags_ms):.0f} ms,"
        f" p99 {lags_ms[int(len(lags_ms) * 0.99)]:.0f} ms, max {lags_ms[-1]:.0f} ms;"
        f" of which the handshake+hello on the other node p50"
        f" {statistics.median(handshake_ms):.0f} ms, max {handshake_ms[-1]:.0f} ms)"
        f"\n  sends acked: {len(acked)} ({acked_before} before SIGTERM); stored: {len(stored)}"
    )
    # Spread, not a herd: every bucket used, none above twice its share (a
    # uniform draw of 2,000 puts ~200 +- 13 in each: a false alarm is impossible
    # in practice).
    assert all(count > 0 for count in drawn), drawn
    assert max(drawn) <= 2 * share, drawn
    assert len(actual_ms) == CLIENTS
    # When the clients actually knocked (``attempts``, printed above) is this
    # one test process's timing: reading 2,000 sockets on a shared 2-core box
    # bunches them by however loaded the box is, so it is reported, not
    # asserted. What the server decides, the delays it drew, is held above.
    # Nothing acknowledged is lost (some unacknowledged sends may have landed too).
    by_cmid = {m["client_msg_id"]: m["seq"] for m in stored}
    assert {k: by_cmid.get(k) for k in acked} == acked
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
