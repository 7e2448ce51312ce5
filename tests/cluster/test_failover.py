"""A node dies (SIGKILL) mid-chat: its clients come back through the load
balancer on the other nodes on their own, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.cluster.support import Cluster, history
from tests.wire import Http, poll
from tidings_client import ResilienceConfig, ResilientClient
from tidings_client.resilience import MessageSent, SendFailed
from tidings_tools.faults.balancer import Balancer

USERS = 12  # four per node
PER_USER = 15
SEND_GAP_S = 0.05
KILL_AFTER = USERS * PER_USER // 3  # acknowledged sends before the kill
SEND_PHASE_S = 60.0
CONVERGE_S = 30.0


async def test_sigkill_a_node_its_clients_move_and_lose_nothing(cluster: Cluster) -> None:
    nodes = await cluster.start(3)
    victim = nodes[1]
    balancer = Balancer([("127.0.0.1", n.port) for n in nodes])
    await balancer.start()
    config = ResilienceConfig(
        ack_timeout=1.5, backoff_base=0.05, backoff_cap=0.5, stable_after=2.0, delivered_delay=0.1
    )
    async with aiohttp.ClientSession() as session:
        http = Http(session, nodes[0].http_url)
        accounts = [await http.account() for _ in range(USERS)]
        cid = await http.conversation(accounts[0], "group", accounts[1:])
        clients = [
            ResilientClient(f"ws://127.0.0.1:{balancer.port}/v1/ws", a.token, config=config)
            for a in accounts
        ]
        sent: dict[str, MessageSent] = {}
        retried = 0
        killed = asyncio.Event()
        all_sent = asyncio.Event()

        async def listen(client: ResilientClient) -> None:
            nonlocal retried
            while True:
                event = await client.next_event()
                if isinstance(event, MessageSent):
                    sent[event.client_msg_id] = event
                    if len(sent) >= KILL_AFTER and not killed.is_set():
                        victim.kill()
                        killed.set()
                    if len(sent) == USERS * PER_USER:
                        all_sent.set()
                elif isinstance(event, SendFailed) and event.retryable:
                    retried += 1
                    client.retry(event.client_msg_id)

        listeners = [asyncio.create_task(listen(c)) for c in clients]
        try:
            for client in clients:
                await client.start()
            await asyncio.gather(*(c.wait_online(10) for c in clients))
            on_victim = balancer.routed[1]
            assert on_victim >= USERS // 3 - 1, balancer.routed

            async def chat(i: int, client: ResilientClient) -> None:
                for n in range(PER_USER):
                    client.send(cid, f"{i}#{n}")
                    await asyncio.sleep(SEND_GAP_S)

            routed_before = list(balancer.routed)
            await asyncio.gather(*(chat(i, c) for i, c in enumerate(clients)))
            await asyncio.wait_for(all_sent.wait(), SEND_PHASE_S)
            assert killed.is_set()
            assert await victim.wait() < 0  # killed by a signal

            # Every client is online again, and the victim's went elsewhere.
            await asyncio.gather(*(c.wait_online(10) for c in clients))
            moved = sum(balancer.routed) - sum(routed_before)
            assert moved >= on_victim, (routed_before, balancer.routed)
            assert balancer.routed[1] == routed_before[1]  # nobody got through to the dead node

            stored = await history(Http(session, nodes[2].http_url), accounts[0].token, cid)
            for client in clients:
                client.wake_up()

            await poll(
                lambda: all(len(c.store.messages(cid)) >= len(stored) for c in clients),
                CONVERGE_S,
            )
            held = [client.store.messages(cid) for client in clients]
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
            for client in clients:
                await client.close()
            await balancer.close()

    total = USERS * PER_USER
    # The server holds every send exactly once, gap-free ...
    assert [m["seq"] for m in stored] == list(range(1, total + 1))
    assert len({m["client_msg_id"] for m in stored}) == total
    # ... each acknowledged send at the seq its ack gave ...
    by_cmid = {m["client_msg_id"]: m for m in stored}
    assert all(by_cmid[cmid]["seq"] == s.seq for cmid, s in sent.items())
    # ... and every client holds exactly that history, once each, in order.
    for messages in held:
        assert [m.seq for m in messages] == [m["seq"] for m in stored]
        assert [m.message_id for m in messages] == [m["message_id"] for m in stored]
    first_try = sum(1 for s in sent.values() if s.failed_attempts == 0)
    print(
        f"\nSIGKILL failover: {on_victim} of {USERS} clients were on the killed node;"
        f" {moved} reconnects through the balancer (routed {balancer.routed},"
        f" refused {balancer.refused}); {total} sends acked, first-attempt {first_try},"
        f" app retries {retried}; every client holds {len(stored)} messages exactly once"
    )
