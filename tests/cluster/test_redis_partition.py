"""Redis is cut from one node while messages flow (the seeds' FM12).

The node reaches Redis through a fault proxy; closing the proxy cuts its
pub/sub and publish connections and refuses new ones. During the cut its
sends still succeed (they are durable in PostgreSQL), its /readyz says 503
with the bus check failing, and its clients get nothing live from the other
nodes. When the proxy is back on the same port the node republishes what it
held and pushes every local connection what it missed from the store: its
clients catch up without reconnecting, and nothing is lost anywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp

from tests.cluster.support import Cluster, Peer, close_all, history, readyz, until_status
from tests.wire import Http
from tidings_tools.faults.proxy import FaultProxy

PER_NODE = 3  # members connected to each node
BEFORE, DURING, AFTER = 2, 5, 2  # messages per sender before, during and after the cut
STATE_CHANGE_S = 10.0  # the bus notices a cut at once and reconnects within ~2 s backoff
REPAIR_S = 15.0


async def test_redis_cut_from_one_node_sends_survive_and_clients_are_repaired(
    cluster: Cluster,
) -> None:
    redis = urlsplit(cluster.bus)
    proxy = FaultProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    await proxy.start()
    proxied_bus = f"redis://127.0.0.1:{proxy.port}{redis.path or '/0'}"
    a, b = await cluster.start(2)
    cut = await cluster.spawn(bus=proxied_bus)
    nodes = [a, b, cut]
    async with aiohttp.ClientSession() as session:
        http = Http(session, a.http_url)
        accounts = [await http.account() for _ in range(3 * PER_NODE)]
        cid = await http.conversation(accounts[0], "group", accounts[1:])
        peers = [await Peer.connect(session, nodes[i % 3], acc) for i, acc in enumerate(accounts)]
        senders = peers[:3]  # one on each node
        on_cut = [p for p in peers if p.node == cut.name]
        sessions = {id(p): p.welcome.get("session_id") for p in peers}
        acked: dict[str, int] = {}

        async def round_of(tag: str, count: int) -> None:
            async def one(peer: Peer) -> None:
                for n in range(count):
                    cmid = f"{tag}-{peer.node}-{n}"
                    ack = await peer.send(cid, cmid)
                    assert ack["type"] == "ack", (tag, peer.node, ack)
                    acked[cmid] = ack["seq"]

            await asyncio.gather(*(one(s) for s in senders))

        try:
            await round_of("before", BEFORE)
            status, body = await readyz(cut.http_url)
            assert status == 200, body

            # Cut: the proxy goes away (links reset, new connections refused).
            port = proxy.port
            await proxy.close()
            cut_at = time.monotonic()
            body = await until_status(cut.http_url, 503, STATE_CHANGE_S)
            assert body["checks"]["bus"] != "ok", body
            assert body["checks"]["store"] == "ok", body
            seen_on_cut = {id(p): len(p.msgs) for p in on_cut}
            await round_of("during", DURING)  # every send acked, on the cut node too
            during = {k: v for k, v in acked.items() if k.startswith("during")}
            from_others = {s for k, s in during.items() if not k.startswith(f"during-{cut.name}-")}
            # Live delivery still works between the healthy nodes ...
            for peer in peers:
                if peer.node != cut.name:
                    await peer.wait_for(
                        lambda p=peer: from_others <= set(p.seqs(cid)) | _own(p, acked),
                        STATE_CHANGE_S,
                    )
            # ... and is paused on the cut node.
            live_on_cut = sum(len(p.msgs) - seen_on_cut[id(p)] for p in on_cut)
            status, body = await readyz(cut.http_url)
            assert status == 503, body
            assert body["checks"]["bus"] != "ok", body
            cut_for = time.monotonic() - cut_at

            # Heal: the proxy comes back on the same port.
            proxy = FaultProxy(redis.hostname or "127.0.0.1", redis.port or 6379, listen_port=port)
            await proxy.start()
            healed_at = time.monotonic()
            total = len(acked)

            def complete(peer: Peer) -> bool:
                return set(peer.seqs(cid)) | _own(peer, acked) >= set(range(1, total + 1))

            await asyncio.gather(*(p.wait_for(lambda p=p: complete(p), REPAIR_S) for p in peers))
            repaired_in = time.monotonic() - healed_at
            await until_status(cut.http_url, 200, STATE_CHANGE_S)
            await round_of("after", AFTER)  # and live delivery is back everywhere
            total = len(acked)
            await asyncio.gather(*(p.wait_for(lambda p=p: complete(p), REPAIR_S) for p in peers))
            await asyncio.sleep(0.5)  # late duplicates, if any, arrive by now

            # Repaired without reconnecting: same connection, never closed or told to go.
            for peer in peers:
                assert not peer.closed.is_set(), peer.node
                assert peer.reconnect is None, peer.node
                assert peer.welcome.get("session_id") == sessions[id(peer)]
            stored = await history(Http(session, cut.http_url), accounts[0].token, cid)
        finally:
            await close_all(peers)
            await proxy.close()

    # Nothing lost: every ack is in the history at its seq; seqs gap-free.
    assert [m["seq"] for m in stored] == list(range(1, total + 1))
    assert {m["client_msg_id"]: m["seq"] for m in stored} == acked
    duplicates: Counter[str] = Counter()
    for peer in peers:
        duplicates[peer.node] += sum(c - 1 for c in Counter(peer.seqs(cid)).values())
    echoed = 0
    for peer in peers:
        got, own = set(peer.seqs(cid)), _own(peer, acked)
        # Every member holds every other member's message (nothing lost) ...
        assert got >= set(range(1, total + 1)) - own, peer.node
        # ... and nothing that was never stored. (After a bus gap the repair
        # also pushes a sender's own messages back to it as msg; a client
        # dedupes them by seq. Counted and reported, not failed.)
        assert got <= set(range(1, total + 1)), peer.node
        echoed += len(got & own)
    print(
        f"\nredis cut from {cut.name} for {cut_for:.1f} s: {len(during)} sends acked during"
        f" the cut ({DURING} on the cut node); live msgs reaching the cut node's"
        f" {len(on_cut)} clients during the cut: {live_on_cut}; after the heal every client"
        f" complete in {repaired_in:.2f} s without reconnecting; duplicates per node"
        f" {dict(duplicates)}; own messages pushed back to their sender by the repair: {echoed}"
    )


def _own(peer: Peer, acked: dict[str, int]) -> set[int]:
    """Seqs of this peer's own sends (it gets an ack for them, not a msg)."""
    return {acked[c] for c in peer.acks if c in acked}
