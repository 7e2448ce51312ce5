"""Several nodes on one machine share one port (``reuse_port``, SO_REUSEPORT):
the kernel spreads connections over them, and the port keeps serving when
one of them dies. The restart-storm benchmark relies on this layout."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.cluster.support import READY_TIMEOUT_S, Cluster, NodeProc
from tests.procs import free_port
from tests.wire import Http, Raw

CONNECTIONS = 12
LISTENING = "tidings listening on "


async def until_listening(node: NodeProc) -> None:
    """/readyz on a shared port may be answered by another node: read the log."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while LISTENING not in node.log_tail(100_000):
            assert node.running, f"{node.name} exited:\n{node.log_tail()}"
            await asyncio.sleep(0.05)


async def test_nodes_share_a_port_and_it_survives_one_of_them(cluster: Cluster) -> None:
    port = free_port()
    first = await cluster.spawn(port=port, TIDINGS_REUSE_PORT="1")
    second = await cluster.spawn(port=port, ready=False, TIDINGS_REUSE_PORT="1")
    await until_listening(second)
    async with aiohttp.ClientSession() as session:
        http = Http(session, first.http_url)
        account = await http.account()
        for _ in range(CONNECTIONS):
            conn, welcome = await Raw.connect(session, first.ws_url, account.token)
            assert welcome["type"] == "welcome"
            await conn.close()
        first.kill()
        assert await first.wait() != 0
        # The same port, now served by the second node alone.
        for _ in range(CONNECTIONS):
            conn, welcome = await Raw.connect(session, second.ws_url, account.token)
            assert welcome["user_id"] == account.user_id
            await conn.close()
    assert second.running


async def test_without_reuse_port_a_second_node_cannot_bind(cluster: Cluster) -> None:
    port = free_port()
    await cluster.spawn(port=port)
    second = await cluster.spawn(port=port, ready=False)
    code = await second.wait(READY_TIMEOUT_S)
    assert code != 0
