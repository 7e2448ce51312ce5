"""Three nodes, one group spread over them: exactly-once, in-order fan-out
through Redis, and gap-free seqs under concurrent senders on every node."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import aiohttp

from tests.cluster.support import Cluster, Peer, close_all, history
from tests.wire import Http

MEMBERS = 30  # ten on each node
PER_SENDER = 10  # every member sends this many, all at once
DELIVERY_S = 20.0  # bound on the last delivery; a healthy cluster needs well under 1 s
SETTLE_S = 0.5  # after the last expected frame, wait this long for duplicates


async def test_group_over_three_nodes_gets_every_message_once_in_order(cluster: Cluster) -> None:
    nodes = await cluster.start(3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        https = [Http(session, n.http_url) for n in nodes]
        accounts = list(await asyncio.gather(*(https[i % 3].account() for i in range(MEMBERS))))
        cid = await https[1].conversation(accounts[0], "group", accounts[1:])
        peers = [await Peer.connect(session, nodes[i % 3], acc) for i, acc in enumerate(accounts)]
        try:

            async def pump(peer: Peer) -> list[int]:
                seqs = []
                for n in range(PER_SENDER):
                    ack = await peer.send(cid, f"{peer.account.username}#{n}")
                    assert ack["type"] == "ack", ack
                    seqs.append(ack["seq"])
                return seqs

            acked = await asyncio.gather(*(pump(p) for p in peers))
            total = MEMBERS * PER_SENDER
            # Concurrent senders on three nodes: seqs 1..N, each given once.
            all_seqs = sorted(s for seqs in acked for s in seqs)
            assert all_seqs == list(range(1, total + 1))
            for seqs in acked:  # one sender's seqs grow with its sends
                assert seqs == sorted(seqs)

            own = {p.account.user_id: set(s) for p, s in zip(peers, acked, strict=True)}

            async def delivered(peer: Peer) -> None:
                want = total - len(own[peer.account.user_id])
                await peer.wait_for(lambda: len(peer.seqs(cid)) >= want, DELIVERY_S)

            await asyncio.gather(*(delivered(p) for p in peers))
            await asyncio.sleep(SETTLE_S)  # any duplicate would arrive by now

            duplicates = 0
            out_of_order = 0
            for peer in peers:
                got = peer.seqs(cid)
                expected = [s for s in range(1, total + 1) if s not in own[peer.account.user_id]]
                duplicates += sum(c - 1 for c in Counter(got).values())
                out_of_order += sum(1 for a, b in itertools.pairwise(got) if b <= a)
                # Exactly the others' messages, each once, in seq order.
                assert got == expected, (peer.node, peer.account.username)
                # The frames carry the stored message (the sender's client_msg_id).
                assert all(m["content"]["text"] == m["client_msg_id"] for m in peer.msgs)
            stored = await history(https[2], accounts[0].token, cid)
            assert [m["seq"] for m in stored] == list(range(1, total + 1))
            assert len({m["client_msg_id"] for m in stored}) == total
            deliveries = sum(len(p.msgs) for p in peers)
            expected_deliveries = total * (MEMBERS - 1)
            print(
                f"\nfan-out over 3 nodes: {total} messages from {MEMBERS} concurrent senders;"
                f" seqs 1..{all_seqs[-1]} gap-free; deliveries {deliveries}/{expected_deliveries}"
                f" exactly once; duplicates {duplicates}; out of order {out_of_order}"
            )
            assert deliveries == expected_deliveries
        finally:
            await close_all(peers)
