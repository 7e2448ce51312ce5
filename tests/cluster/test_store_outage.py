"""PostgreSQL unreachable from a node: its sends fail with ``unavailable``
(retryable), nothing is half written, and the same send succeeds once after
recovery.

The node reaches PostgreSQL through a fault proxy; closing the proxy resets
the pool's connections and refuses new ones, so the store fails fast
(connection refused) rather than after its ~7 s command timeout. A second
node, connected directly, is the witness that nothing was written.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tests.cluster.support import Cluster, Peer, close_all, history, readyz, until_status
from tests.wire import Http
from tidings_tools.faults.proxy import FaultProxy

UNAVAILABLE_WITHIN_S = 10.0  # the store's own bound is ~7 s; a refused connect is instant
RECOVER_S = 15.0


async def test_store_unreachable_sends_fail_retryably_and_succeed_after_recovery(
    cluster: Cluster,
) -> None:
    pg = urlsplit(cluster.store)
    proxy = FaultProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    await proxy.start()
    userinfo = pg.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit((pg.scheme, netloc, pg.path, pg.query, pg.fragment))
    witness = await cluster.spawn()
    node = await cluster.spawn(store=proxied)
    async with aiohttp.ClientSession() as session:
        http = Http(session, witness.http_url)
        alice, bob = await http.account(), await http.account()
        cid = await http.conversation(alice, "direct", [bob])
        sender = await Peer.connect(session, node, alice)
        reader = await Peer.connect(session, witness, bob)
        try:
            first = await sender.send(cid, "m1")
            assert (first["type"], first["seq"]) == ("ack", 1), first

            port = proxy.port
            await proxy.close()  # PostgreSQL is gone for this node
            started = time.monotonic()
            error = await sender.send(cid, "m2", timeout=UNAVAILABLE_WITHIN_S)
            failed_in = time.monotonic() - started
            assert error["type"] == "error", error
            assert error["code"] == "unavailable", error
            assert error["retryable"] is True, error
            assert error["ref"] == "m2"
            status, body = await readyz(node.http_url)
            assert status == 503, body
            assert body["checks"]["store"] != "ok", body
            # Nothing half written: the witness sees only m1, no seq was spent.
            stored = await history(http, bob.token, cid)
            assert [(m["seq"], m["client_msg_id"]) for m in stored] == [(1, "m1")]
            await asyncio.sleep(0.3)
            assert reader.seqs(cid) == [1]

            # The proxy comes back on the same port; the client sends the same
            # frame again (as its outbox does) until the store answers.
            proxy = FaultProxy(pg.hostname or "127.0.0.1", pg.port or 5432, listen_port=port)
            await proxy.start()
            healed = time.monotonic()
            attempts = 0
            async with asyncio.timeout(RECOVER_S):
                while True:
                    attempts += 1
                    again = await sender.send(cid, "m2")
                    if again["type"] == "ack":
                        break
                    assert again["code"] == "unavailable", again
                    assert again["retryable"] is True, again
                    await asyncio.sleep(again.get("retry_after_ms", 1000) / 1000 / 4)
            recovered_in = time.monotonic() - healed
            assert (again["seq"], again["duplicate"]) == (2, False), again
            dup = await sender.send(cid, "m2")
            assert (dup["type"], dup["seq"], dup["duplicate"]) == ("ack", 2, True), dup
            await reader.wait_for(lambda: reader.seqs(cid) == [1, 2])
            stored = await history(http, bob.token, cid)
            assert [(m["seq"], m["client_msg_id"]) for m in stored] == [(1, "m1"), (2, "m2")]
            await until_status(node.http_url, 200, RECOVER_S)
        finally:
            await close_all([sender, reader])
            await proxy.close()
    print(
        f"\nstore outage: send failed with unavailable (retryable) in {failed_in * 1000:.0f} ms;"
        f" after the proxy returned the same send succeeded in {recovered_in * 1000:.0f} ms"
        f" ({attempts} attempt(s)), stored once at seq 2"
    )
