"""Admin commands on a running cluster: what `tidings conversation create` and
`tidings user disable` change reaches the nodes' open sessions at once,
through the cluster's Redis bus (docs/architecture.md, "Admin commands and
running nodes"), without anyone reconnecting."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import msgspec

from tests.cluster.support import Cluster, Peer, close_all, node_env
from tests.wire import WAIT_S, Http


async def tidings(cluster: Cluster, *args: str) -> dict[str, object]:
    """Run an admin command against the cluster's store and bus; its JSON answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        *args,
        env=node_env(
            TIDINGS_STORE=cluster.store, TIDINGS_BUS=cluster.bus, TIDINGS_BUS_PREFIX=cluster.prefix
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert err == b"", err.decode()  # the bus took the announcement
    answer: dict[str, object] = msgspec.json.decode(out)
    return answer


async def test_a_conversation_created_by_the_cli_reaches_open_sessions(cluster: Cluster) -> None:
    nodes = await cluster.start(2)
    async with aiohttp.ClientSession() as session:
        http = [Http(session, n.http_url) for n in nodes]
        alice, bob = await http[0].account(), await http[1].account()
        listening = await Peer.connect(session, nodes[1], bob)
        try:
            made = await tidings(
                cluster, "conversation", "create", "--creator", alice.username, bob.username
            )
            cid = str(made["conversation_id"])
            # Sent on the other node: bob's node hears it only if it heard the
            # command's announcement and subscribed bob's session to the group.
            status, body = await http[0].call(
                "POST",
                f"/v1/conversations/{cid}/messages",
                alice.token,
                {"client_msg_id": "after-cli", "content": {"text": "hello"}},
            )
            assert status == 201, body
            await listening.wait_for(lambda: listening.seqs(cid) == [1])
            assert listening.msgs[-1]["client_msg_id"] == "after-cli"
            assert not listening.closed.is_set()
        finally:
            await close_all([listening])


async def test_a_user_disabled_by_the_cli_loses_every_open_session(cluster: Cluster) -> None:
    nodes = await cluster.start(2)
    async with aiohttp.ClientSession() as session:
        http = [Http(session, n.http_url) for n in nodes]
        carol, bob = await http[0].account(), await http[0].account()
        carol_laptop = await http[1].login(carol.username, "laptop")
        peers = [
            await Peer.connect(session, nodes[0], carol),
            await Peer.connect(session, nodes[1], carol_laptop),
            await Peer.connect(session, nodes[1], bob),
        ]
        try:
            answer = await tidings(cluster, "user", "disable", carol.username)
            assert answer["changed"] is True
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(peers[0].closed.wait(), peers[1].closed.wait())
            assert [p.close_code for p in peers[:2]] == [4001, 4001]
            assert not peers[2].closed.is_set()  # everyone else stays connected
        finally:
            await close_all(peers)
