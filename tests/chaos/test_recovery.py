"""Recovery with the resilient SDK: a SIGKILLed server, a stalled link, a restore.

Each test drives real `ResilientClient`s against a real server and checks
what the application would see: every acknowledged message exactly once, in
order, with nothing done by hand to reconnect.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from pathlib import Path

import aiohttp

from tests.conftest import make_settings, start_server
from tests.procs import free_port, run_tidings, spawn_server
from tests.wire import Http
from tidings_client import ResilienceConfig, ResilientClient
from tidings_client.resilience import EpochChanged, MessageSent
from tidings_tools.faults.proxy import FaultPlan, FaultProxy

WAIT_S = 30.0
FAST = ResilienceConfig(
    ack_timeout=1.0, backoff_base=0.05, backoff_cap=0.5, stable_after=2.0, delivered_delay=0.1
)


POLL_S = 0.05


async def _until(clients: Iterable[ResilientClient], cid: str, count: int) -> None:
    """Wait (bounded) until every client holds ``count`` messages of ``cid``."""
    clients = list(clients)
    for _ in range(int(WAIT_S / POLL_S)):
        if all(len(c.store.messages(cid)) >= count for c in clients):
            return
        await asyncio.sleep(POLL_S)
    held = [len(c.store.messages(cid)) for c in clients]
    raise AssertionError(f"clients hold {held} messages of {cid}, expected {count}")


async def _sent(client: ResilientClient, count: int) -> list[MessageSent]:
    sent: list[MessageSent] = []
    async with asyncio.timeout(WAIT_S):
        while len(sent) < count:
            event = await client.next_event()
            if isinstance(event, MessageSent):
                sent.append(event)
    return sent


async def test_clients_converge_after_the_server_is_sigkilled(tmp_path: Path) -> None:
    port = free_port()
    proc = await spawn_server(tmp_path / "data", port, TIDINGS_HEARTBEAT_MS="1000")
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        http = Http(session, base)
        accounts = [await http.account() for _ in range(3)]
        cid = await http.conversation(accounts[0], "group", accounts[1:])
    clients = [
        ResilientClient(f"ws://127.0.0.1:{port}/v1/ws", a.token, config=FAST) for a in accounts
    ]
    try:
        for c in clients:
            await c.start()
            await c.wait_online(WAIT_S)
        for n in range(30):
            clients[n % 3].send(cid, f"before {n}")
        await _until(clients, cid, 10)
        proc.send_signal(signal.SIGKILL)  # mid-traffic: some sends are in flight
        await asyncio.wait_for(proc.wait(), WAIT_S)
        for n in range(30):
            clients[n % 3].send(cid, f"during {n}")  # the outbox keeps them
        proc = await spawn_server(tmp_path / "data", port, TIDINGS_HEARTBEAT_MS="1000")
        await _until(clients, cid, 60)
        histories = [[m.client_msg_id for m in c.store.messages(cid)] for c in clients]
        assert histories[0] == histories[1] == histories[2]
        assert len(histories[0]) == len(set(histories[0])) == 60
        assert [m.seq for m in clients[0].store.messages(cid)] == list(range(1, 61))
        assert all(not c.pending() for c in clients)
    finally:
        for c in clients:
            await c.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), WAIT_S)


async def test_a_stalled_receiver_is_detected_by_heartbeats_and_repaired(
    tmp_path: Path,
) -> None:
    server = await start_server(make_settings(tmp_path / "data", heartbeat_ms=600))
    proxy = FaultProxy("127.0.0.1", server.port, FaultPlan(), seed=3)
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, server.http_url)
            a_acc, b_acc = await http.account(), await http.account()
            cid = await http.conversation(a_acc, "direct", [b_acc])
        sender = ResilientClient(server.ws_url, a_acc.token, config=FAST)
        receiver = ResilientClient(f"ws://127.0.0.1:{proxy.port}/v1/ws", b_acc.token, config=FAST)
        await sender.start()
        await receiver.start()
        await receiver.wait_online(WAIT_S)
        sender.send(cid, "before the stall")
        await _until([receiver], cid, 1)
        stalled = [link for link in proxy.links if not link.closed]
        for link in stalled:
            link.stall()  # no FIN, no RST: a dead radio under a live socket
        for n in range(5):
            sender.send(cid, f"during the stall {n}")
        await _sent(sender, 6)
        # Heartbeats notice the silence on both ends; the client reconnects
        # through the proxy and syncs what it missed.
        await _until([receiver], cid, 6)
        assert [m.seq for m in receiver.store.messages(cid)] == list(range(1, 7))
        assert len(proxy.links) > len(stalled)  # it came back on a new link
        await sender.close()
        await receiver.close()
    finally:
        await proxy.close()
        await server.stop()


async def test_restore_from_backup_tells_clients_and_they_resend(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data)
    server = await start_server(settings)
    backup = tmp_path / "t1.db"
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
    # The apps keep their local stores across the restart (that is where the
    # last epoch they saw is remembered).
    alice_db, bob_db = str(tmp_path / "alice.db"), str(tmp_path / "bob.db")
    alice = ResilientClient(server.ws_url, a_acc.token, db_path=alice_db, config=FAST)
    bob = ResilientClient(server.ws_url, b_acc.token, db_path=bob_db, config=FAST)
    await alice.start()
    await bob.start()
    for n in range(3):
        alice.send(cid, f"kept {n}")
    await _until([alice, bob], cid, 3)
    code, err = await run_tidings("backup", str(backup), "--data-dir", str(data))
    assert code == 0, err
    for n in range(3):
        bob.send(cid, f"lost {n}")
    await _until([alice, bob], cid, 6)
    await alice.close()
    await bob.close()
    await server.stop()

    code, err = await run_tidings("restore", "--from", str(backup), "--data-dir", str(data))
    assert code == 0, err
    server = await start_server(settings)
    alice = ResilientClient(server.ws_url, a_acc.token, db_path=alice_db, config=FAST)
    bob = ResilientClient(server.ws_url, b_acc.token, db_path=bob_db, config=FAST)
    try:
        await alice.start()
        await bob.start()

        async def epoch_event(client: ResilientClient) -> EpochChanged:
            async with asyncio.timeout(WAIT_S):
                while True:
                    event = await client.next_event()
                    if isinstance(event, EpochChanged):
                        return event

        alice_saw, bob_saw = await epoch_event(alice), await epoch_event(bob)
        # The gap is visible: 4..6 are reported lost to both, and Bob, their
        # author, has them back in his outbox under their original ids.
        assert [(r.first_seq, r.last_seq) for r in alice_saw.lost] == [(4, 6)]
        assert len(bob_saw.lost[0].resent) == 3
        # Chatting goes on, and the resent messages are stored once each.
        alice.send(cid, "after the restore")
        await _until([alice, bob], cid, 7)
        texts = [str(m.content.get("text")) for m in bob.store.messages(cid)]
        assert sorted(t for t in texts if t.startswith("lost")) == [
            "lost 0",
            "lost 1",
            "lost 2",
        ]
        async with aiohttp.ClientSession() as session:
            status, body = await Http(session, server.http_url).call(
                "GET", f"/v1/conversations/{cid}/messages?limit=50", a_acc.token
            )
            assert status == 200
            cmids = [m["client_msg_id"] for m in body["messages"]]
            assert len(cmids) == len(set(cmids)) == 7
    finally:
        await alice.close()
        await bob.close()
        await server.stop()
