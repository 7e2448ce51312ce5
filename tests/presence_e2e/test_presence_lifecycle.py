"""Presence over real sockets: online -> away -> offline with several devices,
and a stalled connection (no FIN, no RST) turning offline by heartbeat
timeout plus the grace period. Both presence backends run every case."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.conftest import ServerFactory
from tests.presence_e2e.support import (
    FAST,
    GRACE_MS,
    HEARTBEAT_MS,
    POLL_MS,
    fence,
    keepalive,
    now_ms,
    of_type,
    quiet,
    wait_presence,
)
from tests.wire import Http, Raw
from tidings_tools.faults.proxy import FaultProxy

# Long enough that no connection of the multi-device test needs a keepalive.
SLOW_HEARTBEAT_MS = 10_000


async def test_online_away_offline_across_devices(
    server_factory: ServerFactory,
    presence_settings: dict[str, Any],
    session: aiohttp.ClientSession,
) -> None:
    server = await server_factory(
        **{**FAST, "heartbeat_ms": SLOW_HEARTBEAT_MS}, **presence_settings
    )
    http = Http(session, server.http_url)
    a1 = await http.account(device="phone")
    a2 = await http.login(a1.username, device="laptop")
    c = await http.account()
    started = now_ms()

    watcher, _ = await Raw.connect(session, server.ws_url, c.token)
    await watcher.send({"type": "presence_subscribe", "user_ids": [a1.user_id]})
    first, _ = await wait_presence(watcher, a1.user_id, "offline")
    assert first["last_seen"] == 0, first  # never seen: the state at once

    dev1, _ = await Raw.connect(session, server.ws_url, a1.token)
    online, seen = await wait_presence(watcher, a1.user_id, "online")
    assert seen == [online], seen
    assert started <= online["last_seen"] <= now_ms(), online

    dev2, _ = await Raw.connect(session, server.ws_url, a2.token)
    await dev2.send({"type": "presence", "status": "away"})
    away, seen = await wait_presence(watcher, a1.user_id, "away")
    assert seen == [away], f"a second device must not change what C sees: {seen}"

    # One device leaves: the other is still there, so still away, never offline.
    await dev1.close()
    quiet_frames = await quiet(watcher, (GRACE_MS + 4 * POLL_MS) / 1000)
    assert of_type(quiet_frames, "presence") == [], quiet_frames

    # The last device leaves: offline, but only after the grace period.
    closed_at = time.monotonic()
    await dev2.close()
    offline, seen = await wait_presence(watcher, a1.user_id, "offline")
    elapsed = time.monotonic() - closed_at
    assert seen == [offline], seen
    assert elapsed >= (GRACE_MS - 50) / 1000, f"offline after {elapsed:.3f}s, before the grace"
    assert started < offline["last_seen"] <= now_ms(), offline
    await watcher.close()


async def test_stalled_connection_turns_offline_by_heartbeat_timeout(
    server_factory: ServerFactory,
    presence_settings: dict[str, Any],
    session: aiohttp.ClientSession,
) -> None:
    server = await server_factory(**FAST, **presence_settings)
    proxy = FaultProxy("127.0.0.1", server.port)
    await proxy.start()
    try:
        http = Http(session, server.http_url)
        a = await http.account()
        c = await http.account()
        watcher, _ = await Raw.connect(session, server.ws_url, c.token)
        stalled, _ = await Raw.connect(session, f"ws://127.0.0.1:{proxy.port}/v1/ws", a.token)
        async with keepalive(watcher), keepalive(stalled):
            await watcher.send({"type": "presence_subscribe", "user_ids": [a.user_id]})
            await wait_presence(watcher, a.user_id, "online")
            # Alive for more than two heartbeats while it pings: no flapping.
            held = await quiet(watcher, 2.1 * HEARTBEAT_MS / 1000)
            assert of_type(held, "presence") == [], held

            proxy.links[-1].stall()  # no FIN, no RST: only heartbeats can tell
            stalled_at = time.monotonic()
            offline, seen = await wait_presence(watcher, a.user_id, "offline")
            elapsed = time.monotonic() - stalled_at
        assert seen == [offline], seen
        # Silent for 2 heartbeats (its last ping was at most a third of one
        # before the stall), then the grace period.
        lower = (2 * HEARTBEAT_MS - HEARTBEAT_MS / 3 + GRACE_MS - 100) / 1000
        assert elapsed >= lower, f"offline {elapsed:.3f}s after the stall (< {lower}s)"
        assert offline["last_seen"] > 0
        await fence(watcher)
        await watcher.close()
    finally:
        await proxy.close()


async def test_a_later_subscriber_does_not_hide_a_change_from_an_earlier_one(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """C1 watches A while A is offline; A connects; C2 subscribes to A before
    the next poll. C1 must still be told that A is online."""
    poll_ms = 500
    server = await server_factory(
        **{**FAST, "heartbeat_ms": SLOW_HEARTBEAT_MS, "presence_poll_ms": poll_ms}
    )
    http = Http(session, server.http_url)
    a = await http.account()
    c1 = await http.account()
    c2 = await http.account()
    early, _ = await Raw.connect(session, server.ws_url, c1.token)
    late, _ = await Raw.connect(session, server.ws_url, c2.token)
    await early.send({"type": "presence_subscribe", "user_ids": [a.user_id]})
    await wait_presence(early, a.user_id, "offline")

    a_conn, _ = await Raw.connect(session, server.ws_url, a.token)
    await late.send({"type": "presence_subscribe", "user_ids": [a.user_id]})
    await wait_presence(late, a.user_id, "online")  # the state at once

    online, seen = await wait_presence(early, a.user_id, "online", timeout=4 * poll_ms / 1000)
    assert seen == [online], seen
    for conn in (early, late, a_conn):
        await conn.close()
