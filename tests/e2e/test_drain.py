"""Drain and admission control: a restart must not become a thundering herd (FM7)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import ServerFactory
from tests.procs import free_port, spawn_server
from tests.wire import WAIT_S, Http, Raw

CLIENTS = 200
WINDOW_MS = 2000
BUCKETS = 10


async def test_admission_control_answers_503_with_retry_after(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(handshake_rate_per_s=2, handshake_burst=5)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        acc = await http.account()

        async def attempt() -> int | str:
            try:
                ws = await session.ws_connect(server.ws_url)
            except aiohttp.WSServerHandshakeError as exc:
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                return f"{exc.status}:{retry_after}"
            await ws.close()
            return 101

        results = await asyncio.gather(*(attempt() for _ in range(10)))
        assert results.count(101) == 5
        refused = [r for r in results if r != 101]
        assert len(refused) == 5
        assert all(str(r).startswith("503:") and int(str(r)[4:]) >= 1 for r in refused)
        # Honouring Retry-After gets in.
        await asyncio.sleep(int(str(refused[0])[4:]))
        conn, _ = await Raw.connect(session, server.ws_url, acc.token)
        await conn.close()
        refusals = server.node.metrics.registry.get_sample_value(
            "tidings_handshakes_refused_total", {"reason": "too many handshakes"}
        )
        assert refusals == 5


async def refused(session: aiohttp.ClientSession, ws_url: str) -> bool:
    """True if the upgrade was answered 503 with a Retry-After of a second or more."""
    try:
        ws = await session.ws_connect(ws_url)
    except aiohttp.WSServerHandshakeError as exc:
        retry_after = exc.headers.get("Retry-After", "") if exc.headers else ""
        return exc.status == 503 and retry_after.isdigit() and int(retry_after) >= 1
    await ws.close()
    return False


async def open_when_admitted(session: aiohttp.ClientSession, ws_url: str) -> Raw:
    """Open a WebSocket, retrying 503s until the server has seen a slot free (bounded)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                return await Raw.open(session, ws_url)
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.05)


async def test_admission_caps_handshakes_in_progress(
    server_factory: ServerFactory,
) -> None:
    # Upgrades hold their slots while waiting for hello for longer than the test.
    server = await server_factory(handshake_concurrency=3, handshake_await_hello_ms=600_000)
    async with aiohttp.ClientSession() as session:
        acc = await Http(session, server.http_url).account()
        waiting = [await Raw.open(session, server.ws_url) for _ in range(3)]
        assert await refused(session, server.ws_url)
        # A welcome frees a slot ...
        await waiting[0].send({"type": "hello", "token": acc.token})
        assert (await waiting[0].recv())["type"] == "welcome"
        fourth = await Raw.open(session, server.ws_url)
        assert await refused(session, server.ws_url)
        # ... and so does a socket that leaves without hello (once the server saw it go).
        await fourth.send({"type": "hello", "token": acc.token})
        assert (await fourth.recv())["type"] == "welcome"
        extra = await Raw.open(session, server.ws_url)  # waiting[1], waiting[2], extra
        assert await refused(session, server.ws_url)
        await waiting[1].close()
        opened = await open_when_admitted(session, server.ws_url)
        for conn in (opened, extra, fourth, waiting[0], waiting[2]):
            await conn.close()
        refusals = server.node.metrics.registry.get_sample_value(
            "tidings_handshakes_refused_total", {"reason": "too many handshakes in progress"}
        )
        assert refusals is not None
        assert refusals >= 3
        welcomed = server.node.metrics.registry.get_sample_value("tidings_handshake_seconds_count")
        assert welcomed == 2  # waiting[0] and fourth; the others never said hello


async def test_silent_upgrades_do_not_keep_others_out_until_their_hello_timeout(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(
        handshake_concurrency=2, handshake_await_hello_ms=200, hello_timeout_ms=600_000
    )
    async with aiohttp.ClientSession() as session:
        acc = await Http(session, server.http_url).account()
        silent = [await Raw.open(session, server.ws_url) for _ in range(2)]
        await asyncio.sleep(0.5)  # longer than handshake_await_hello_ms
        # Admitted at the first attempt, while both silent sockets are still open.
        conn, welcome = await Raw.connect(session, server.ws_url, acc.token)
        assert welcome["type"] == "welcome"
        assert all(not s.ws.closed for s in silent)
        # A silent socket's late hello is answered like any other.
        await silent[0].send({"type": "hello", "token": acc.token})
        assert (await silent[0].recv())["type"] == "welcome"
        for c in (conn, *silent):
            await c.close()


async def test_a_full_node_refuses_upgrades_until_a_session_leaves(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_connections=2)
    async with aiohttp.ClientSession() as session:
        acc = await Http(session, server.http_url).account()
        first, _ = await Raw.connect(session, server.ws_url, acc.token)
        second = await Raw.open(session, server.ws_url)  # counts before its hello too
        assert await refused(session, server.ws_url)
        await first.close()
        third = await open_when_admitted(session, server.ws_url)
        await third.close()
        await second.close()
    refusals = server.node.metrics.registry.get_sample_value(
        "tidings_handshakes_refused_total", {"reason": "node full"}
    )
    assert refusals is not None
    assert refusals >= 1


async def test_sigterm_drain_spreads_reconnects_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    proc = await spawn_server(tmp_path / "data", port, TIDINGS_DRAIN_WINDOW_MS=str(WINDOW_MS))
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/ws"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        http = Http(session, base)
        owner = await http.account()
        members = [await http.account() for _ in range(3)]
        cid = await http.conversation(owner, "group", members)
        tokens = [owner.token, *(m.token for m in members)]
        conns = [
            (await Raw.connect(session, ws_url, tokens[i % len(tokens)]))[0] for i in range(CLIENTS)
        ]
        sender = conns[0]
        acked: list[int] = []
        for n in range(20):
            await sender.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"d{n}",
                    "content": {"text": str(n)},
                }
            )
        proc.send_signal(signal.SIGTERM)

        async def until_reconnect(conn: Raw) -> tuple[int, int | None]:
            after = -1
            async with asyncio.timeout(WAIT_S):
                while True:
                    frame = await conn.recv()
                    if frame["type"] == "ack":
                        acked.append(frame["seq"])
                    elif frame["type"] == "reconnect":
                        assert frame["reason"] == "draining"
                        after = frame["after_ms"]
                    elif frame["type"] == "_closed":
                        return after, frame["code"]

        outcomes = await asyncio.gather(*(until_reconnect(c) for c in conns))
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
    delays = [after for after, _ in outcomes]
    assert all(0 <= d <= WINDOW_MS for d in delays)
    assert {code for _, code in outcomes} == {1001}
    histogram = Counter(min(d * BUCKETS // WINDOW_MS, BUCKETS - 1) for d in delays)
    print(
        f"\nreconnect delays per {WINDOW_MS // BUCKETS} ms bucket: "
        f"{[histogram[b] for b in range(BUCKETS)]}"
    )
    # Spread over the window, not a herd: every bucket is used and none holds
    # more than three times its share (200 draws: the chance of a false alarm
    # with a uniform draw is far below 1e-6).
    assert all(histogram[b] > 0 for b in range(BUCKETS))
    assert max(histogram.values()) <= 3 * CLIENTS // BUCKETS

    # Nothing acknowledged before the drain is lost.
    proc = await spawn_server(tmp_path / "data", port)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, base)
            status, body = await http.call(
                "GET", f"/v1/conversations/{cid}/messages?limit=200", owner.token
            )
            assert status == 200
            stored = {m["seq"] for m in body["messages"]}
            assert set(acked) <= stored
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), WAIT_S * 2)
