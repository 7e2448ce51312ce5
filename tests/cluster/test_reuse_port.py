"""Several nodes on one machine share one port (``reuse_port``, SO_REUSEPORT):
the kernel spreads connections over them, and the port keeps serving when
one of them dies. The restart-storm benchmark relies on this layout."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.cluster.support import READY_TIMEOUT_S, Cluster, NodeProc
from tests.procs import free_port
from tests.wire import WAIT_S, Http, Raw, poll

CONNECTIONS = 12
LISTENING = "tidings listening on "
LEFT = "left the port: no room"
BACK = "listening again"
# The small node's max_connections; it is full after this many sessions.
SMALL = 2
# Connections opened to fill the small node: with two nodes, it gets fewer
# than SMALL of them with probability about 40 * 2**-40.
FILL = 40


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


async def until_logged(node: NodeProc, line: str) -> None:
    await poll(lambda: line in node.log_tail(100_000), WAIT_S)


async def connect_or_503(session: aiohttp.ClientSession, url: str, token: str) -> Raw | None:
    """A session, or None for a 503 (a node full at that moment)."""
    try:
        conn, _ = await Raw.connect(session, url, token)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status != 503:
            raise
        return None
    return conn


async def test_a_full_node_steps_off_the_shared_port_and_comes_back(cluster: Cluster) -> None:
    port = free_port()
    small = await cluster.spawn(
        port=port,
        TIDINGS_REUSE_PORT="1",
        TIDINGS_MAX_CONNECTIONS=str(SMALL),
        TIDINGS_LOG_LEVEL="info",  # stepping off and back on are logged at info
    )
    other = await cluster.spawn(port=port, ready=False, TIDINGS_REUSE_PORT="1")
    await until_listening(other)
    conns: list[Raw] = []
    # No keep-alive: a pooled connection would stay with the node it reached.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        account = await Http(session, small.http_url).account()
        try:
            for _ in range(FILL):
                conn = await connect_or_503(session, small.ws_url, account.token)
                conns += [conn] if conn is not None else []
            await until_logged(small, LEFT)
            # Off the port: every connection now reaches the node with room,
            # where a full node still listening would answer about half of them 503.
            for _ in range(CONNECTIONS):
                conn, welcome = await Raw.connect(session, other.ws_url, account.token)
                conns.append(conn)
                assert welcome["user_id"] == account.user_id
        finally:
            for conn in conns:
                await conn.close()
        await until_logged(small, BACK)
    assert small.running
    assert other.running
