"""Presence across nodes started as the README says: only ``TIDINGS_STORE``
and ``TIDINGS_BUS`` set. Presence then follows the bus into Redis, so a
watcher on one node sees a user connected to another node come online and go
offline; a node told to keep presence in memory says so."""

from __future__ import annotations

import aiohttp
import pytest

from tests.cluster.support import Cluster, readyz
from tests.presence_e2e.support import GRACE_MS, POLL_MS, REFRESH_MS, wait_presence
from tests.wire import Http, Raw

# Small presence timings (never the backend): a change reaches a watcher
# within a poll, an offline user within the grace period after that.
FAST_ENV = {
    "TIDINGS_PRESENCE_POLL_MS": str(POLL_MS),
    "TIDINGS_PRESENCE_REFRESH_MS": str(REFRESH_MS),
    "TIDINGS_PRESENCE_GRACE_MS": str(GRACE_MS),
}


async def test_watcher_on_one_node_sees_a_user_on_another(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nodes inherit the test's environment: make sure presence is really unset.
    monkeypatch.delenv("TIDINGS_PRESENCE", raising=False)
    a, b = await cluster.start(2, **FAST_ENV)
    async with aiohttp.ClientSession() as session:
        for node in (a, b):
            status, body = await readyz(node.http_url)
            assert status == 200, body
            assert body["checks"]["presence"] == "ok", body

        http = Http(session, a.http_url)
        watcher_acc, user_acc = await http.account(), await http.account()
        watcher, _ = await Raw.connect(session, a.ws_url, watcher_acc.token)
        user: Raw | None = None
        try:
            await watcher.send({"type": "presence_subscribe", "user_ids": [user_acc.user_id]})
            first, _ = await wait_presence(watcher, user_acc.user_id, "offline")
            assert first["last_seen"] == 0, first  # never seen anywhere yet

            user, _ = await Raw.connect(session, b.ws_url, user_acc.token)
            online, seen = await wait_presence(watcher, user_acc.user_id, "online")
            assert seen == [online], seen

            await user.close()
            user = None
            offline, seen = await wait_presence(watcher, user_acc.user_id, "offline")
            assert seen == [offline], seen
            assert offline["last_seen"] >= online["last_seen"], (online, offline)
        finally:
            if user is not None:
                await user.close()
            await watcher.close()


async def test_memory_presence_on_a_cluster_node_is_reported_and_logged(
    cluster: Cluster,
) -> None:
    node = await cluster.spawn(TIDINGS_PRESENCE="memory://")
    status, body = await readyz(node.http_url)
    assert status == 200, body  # chat works: the balancer keeps the node
    assert body["checks"]["presence"].startswith("local only: "), body
    log = node.log_tail()
    assert "WARNING" in log, log
    assert "other nodes look offline" in log, log
