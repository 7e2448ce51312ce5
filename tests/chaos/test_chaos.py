"""Chaos: never lose an acknowledged message, through a network that breaks.

Fifty resilient SDK clients in direct and group conversations send 2,000
messages through the fault proxy, which cuts links mid-frame (by plan and by
hand, well over 10% of them), stalls others without a FIN, and adds jitter.
At the end every client holds every message of its conversations exactly
once, in seq order, identical to the server's history, and every send the SDK
reported as sent is in that history at the seq its ack gave.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.conftest import ServerFactory
from tests.wire import Account, Http
from tidings_client import ResilienceConfig, ResilientClient
from tidings_client.resilience import MessageSent, SendFailed
from tidings_tools.faults.proxy import FaultPlan, FaultProxy

USERS = 50
GROUP_SIZE = 10
PER_CONVERSATION = 20  # each user sends this many to its direct and to its group
SEED = 20261127
# Bounds on the whole run; a healthy run needs a fraction of them.
SEND_PHASE_S = 120.0
CONVERGE_S = 90.0


@dataclass
class Member:
    account: Account
    direct: str
    group: str
    client: ResilientClient
    sent: dict[str, MessageSent] = field(default_factory=dict)
    failed_then_retried: int = 0


async def _history(http: Http, token: str, cid: str) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = []
    after = 0
    while True:
        status, body = await http.call(
            "GET", f"/v1/conversations/{cid}/messages?after_seq={after}&limit=200", token
        )
        assert status == 200, body
        if not body["messages"]:
            return messages
        messages.extend(body["messages"])
        after = int(body["messages"][-1]["seq"])


@pytest.mark.slow
async def test_no_acknowledged_message_is_lost_under_chaos(server_factory: ServerFactory) -> None:
    server = await server_factory(
        heartbeat_ms=1000, redelivery_ms=1000, send_rate_per_s=1000.0, send_burst=1000
    )
    plan = FaultPlan(
        cut_probability=0.25,
        cut_within_bytes=40_000,
        stall_probability=0.08,
        stall_within_bytes=40_000,
        jitter_s=0.002,
    )
    proxy = FaultProxy("127.0.0.1", server.port, plan, seed=SEED)
    await proxy.start()
    rng = random.Random(SEED)
    config = ResilienceConfig(
        ack_timeout=1.5,
        backoff_base=0.05,
        backoff_cap=0.5,
        stable_after=2.0,
        delivered_delay=0.1,
    )
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        accounts = [await http.account() for _ in range(USERS)]
        directs = [
            await http.conversation(accounts[i], "direct", [accounts[i + 1]])
            for i in range(0, USERS, 2)
        ]
        groups = [
            await http.conversation(accounts[i], "group", accounts[i + 1 : i + GROUP_SIZE])
            for i in range(0, USERS, GROUP_SIZE)
        ]
        members = [
            Member(
                account=acc,
                direct=directs[i // 2],
                group=groups[i // GROUP_SIZE],
                client=ResilientClient(
                    f"ws://127.0.0.1:{proxy.port}/v1/ws", acc.token, config=config
                ),
            )
            for i, acc in enumerate(accounts)
        ]
        expected_sends = USERS * 2 * PER_CONVERSATION
        all_sent = asyncio.Event()
        total_sent = 0

        async def listen(member: Member) -> None:
            nonlocal total_sent
            while True:
                event = await member.client.next_event()
                if isinstance(event, MessageSent):
                    member.sent[event.client_msg_id] = event
                    total_sent += 1
                    if total_sent >= expected_sends:
                        all_sent.set()
                elif isinstance(event, SendFailed) and event.retryable:
                    member.failed_then_retried += 1
                    member.client.retry(event.client_msg_id)  # the app retries

        async def send_all(member: Member) -> None:
            for n in range(PER_CONVERSATION):
                for cid in (member.direct, member.group):
                    member.client.send(cid, f"{member.account.username} #{n}")
                await asyncio.sleep(rng.uniform(0.005, 0.03))

        async def cut_by_hand() -> int:
            """Cut a tenth of the live links, five times, mid-traffic."""
            cut = 0
            for _ in range(5):
                await asyncio.sleep(0.4)
                live = [link for link in proxy.links if not link.closed]
                for link in rng.sample(live, max(1, len(live) // 10)):
                    link.cut()
                    cut += 1
            return cut

        for member in members:
            await member.client.start()
        listeners = [asyncio.create_task(listen(m)) for m in members]
        try:
            cut_task = asyncio.create_task(cut_by_hand())
            await asyncio.gather(*(send_all(m) for m in members))
            hand_cuts = await cut_task
            await asyncio.wait_for(all_sent.wait(), SEND_PHASE_S)

            # The network heals; every client converges on the server's history.
            proxy.plan = FaultPlan()
            for link in proxy.links:
                link.resume()
            for member in members:
                member.client.wake_up()
            server_history: dict[str, list[dict[str, object]]] = {}
            for member in members:
                for cid in (member.direct, member.group):
                    if cid not in server_history:
                        server_history[cid] = await _history(http, member.account.token, cid)

            async def converged(member: Member) -> None:
                while True:
                    done = all(
                        len(member.client.store.messages(cid)) == len(server_history[cid])
                        for cid in (member.direct, member.group)
                    )
                    if done:
                        return
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(asyncio.gather(*(converged(m) for m in members)), CONVERGE_S)
            held = {
                (member.account.user_id, cid): member.client.store.messages(cid)
                for member in members
                for cid in (member.direct, member.group)
            }
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
            for member in members:
                await member.client.close()
            await proxy.close()

    # Every acknowledged send is in the history at the seq of its ack ...
    for member in members:
        for cmid, sent in member.sent.items():
            (stored,) = [
                m for m in server_history[sent.conversation_id] if m["client_msg_id"] == cmid
            ]
            assert stored["seq"] == sent.seq
    # ... every history is gap-free and holds each send once ...
    for history in server_history.values():
        assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
        cmids = [m["client_msg_id"] for m in history]
        assert len(cmids) == len(set(cmids))
    assert sum(len(h) for h in server_history.values()) == expected_sends
    # ... and every client holds exactly the server's history, in order.
    delivered = 0
    for (_, cid), messages in held.items():
        assert [m.seq for m in messages] == [m["seq"] for m in server_history[cid]]
        assert [m.message_id for m in messages] == [m["message_id"] for m in server_history[cid]]
        delivered += len(messages)
    expected_held = USERS * (2 * PER_CONVERSATION + GROUP_SIZE * PER_CONVERSATION)
    assert delivered == expected_held

    first_try = sum(1 for m in members for s in m.sent.values() if s.failed_attempts == 0)
    links = len(proxy.links)
    print(
        f"\nchaos: {expected_sends} sends by {USERS} clients over {links} links; "
        f"cut {proxy.cuts} by plan + {hand_cuts} by hand, stalled {proxy.stalls}; "
        f"first-attempt success {first_try / expected_sends:.1%}; "
        f"final delivery {delivered}/{expected_held} = {delivered / expected_held:.1%}"
    )
    assert (proxy.cuts + hand_cuts) >= links // 10
