"""A node killed with SIGKILL while it notifies, and started again: no
notification is sent twice (at most once per subscription and seq), and the
notifications resume where they stopped.

The webhook answers slowly, the change log is read in small batches and the
messages keep coming while the node dies, so the kill lands among sends in
flight and batches being noted. Whether it lands between a batch handled and
its position saved is up to timing; that case (the batch handled again) is
proven without timing in test_store.py, which notes a batch twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp

from tests.features.push.support import Answer, Endpoint
from tests.procs import free_port, spawn_server
from tests.wire import WAIT_S, Account, Http

USERS = 8
ROUNDS = 12

ENV = {
    "TIDINGS_PUSH_DELAY_MS": "150",
    "TIDINGS_PUSH_POLL_MS": "20",
    "TIDINGS_PUSH_WEBHOOK_ALLOW": "127.0.0.1/32",
    "TIDINGS_CHANGELOG_POLL_MS": "20",
    "TIDINGS_CHANGELOG_BATCH_SIZE": "5",
    "TIDINGS_CHANGELOG_LEASE_MS": "500",
}


async def test_a_node_killed_while_notifying_sends_nothing_twice(tmp_path: Path) -> None:
    endpoint = await Endpoint().start()
    port = free_port()
    proc = await spawn_server(tmp_path, port, **ENV)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, f"http://127.0.0.1:{port}")
            alice = await http.account()
            members: list[tuple[Account, str]] = []
            for i in range(USERS):
                user = await http.account()
                cid = await http.conversation(alice, "direct", [user])
                endpoint.answers[f"/u{i}"] = Answer(delay_s=0.05)
                status, _ = await http.call(
                    "POST",
                    "/v1/push/subscriptions",
                    user.token,
                    {"kind": "webhook", "url": endpoint.url(f"/u{i}")},
                )
                assert status == 201
                members.append((user, cid))

            async def round_of_sends(tag: str) -> None:
                for _, cid in members:
                    status, body = await http.call(
                        "POST",
                        f"/v1/conversations/{cid}/messages",
                        alice.token,
                        {"client_msg_id": f"{tag}-{cid}", "content": {"text": tag}},
                    )
                    assert status in (200, 201), body  # 200: stored before the kill

            async def rounds() -> None:
                for n in range(ROUNDS):
                    await round_of_sends(f"round{n}")
                    await asyncio.sleep(0.03)

            traffic = asyncio.create_task(rounds())
            await endpoint.wait_for_any(USERS // 2)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), WAIT_S)
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                await traffic  # the sends that met the dead node

            proc = await spawn_server(tmp_path, port, **ENV)
            await rounds()  # again: what was stored before the kill is deduplicated
            await round_of_sends("after")
            last_seq = ROUNDS + 1
            await endpoint.wait_until(
                lambda: all(
                    any(r.json()["seq"] == last_seq for r in endpoint.at(f"/u{i}"))
                    for i in range(USERS)
                )
            )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), WAIT_S)
        await endpoint.stop()

    deliveries = [r.headers["X-Tidings-Delivery"] for r in endpoint.received]
    assert len(deliveries) == len(set(deliveries))
    for i in range(USERS):
        seqs = [r.json()["seq"] for r in endpoint.at(f"/u{i}")]
        # Each notification tells of messages after the previous one's: a seq
        # told twice would repeat or go back.
        assert seqs == sorted(set(seqs)), (i, seqs)
        counts = [r.json()["count"] for r in endpoint.at(f"/u{i}")]
        assert sum(counts) <= last_seq
