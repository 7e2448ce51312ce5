"""An operator disables or resets an account: its tokens stop working at once,
and a disabled account cannot log in (the CLI calls these store methods)."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Http


async def test_disabled_accounts_cannot_log_in_and_lose_their_tokens(
    tidings_server: RunningServer,
) -> None:
    store = tidings_server.node.store
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        alice = await http.account("alice")
        status, _ = await http.call("GET", "/v1/conversations", alice.token)
        assert status == 200

        assert await store.set_disabled(alice.user_id, True, 1) is True
        status, body = await http.call("GET", "/v1/conversations", alice.token)
        assert status == 401, body
        status, body = await http.call(
            "POST", "/v1/auth/login", json={"username": "alice", "password": "correct horse"}
        )
        assert status == 403, body
        assert body["error"]["code"] == "forbidden"
        status, body = await http.call(
            "POST", "/v1/auth/login", json={"username": "alice", "password": "wrong horse!"}
        )
        assert status == 401, body  # a wrong password does not learn the account is disabled

        assert await store.set_disabled(alice.user_id, False, 2) is True
        again = await http.login("alice")
        status, _ = await http.call("GET", "/v1/conversations", again.token)
        assert status == 200
