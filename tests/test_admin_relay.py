"""Admin commands reach a single node on the in-process bus: what
`tidings user disable` and `tidings conversation create` change reaches the
node's open sessions without anyone reconnecting, through announcements the
command leaves in the store (``bus/store_relay.py``)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import aiohttp
import msgspec

from tests.conftest import RunningServer
from tests.wire import WAIT_S, Http, Raw


async def tidings(server: RunningServer, *args: str) -> dict[str, Any]:
    """Run an admin command on the node's data directory; its JSON answer."""
    env = {**os.environ, "TIDINGS_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        *args,
        "--data-dir",
        server.node.settings.data_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert err == b"", err.decode()
    answer: dict[str, Any] = msgspec.json.decode(out)
    return answer


async def test_a_user_disabled_by_the_cli_loses_open_sessions_at_once(
    tidings_server: RunningServer,
) -> None:
    assert tidings_server.node.settings.bus.startswith("memory://")
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        carol, bob = await http.account(), await http.account()
        carol_laptop = await http.login(carol.username, "laptop")
        phone, _ = await Raw.connect(session, tidings_server.ws_url, carol.token)
        laptop, _ = await Raw.connect(session, tidings_server.ws_url, carol_laptop.token)
        other, _ = await Raw.connect(session, tidings_server.ws_url, bob.token)
        answer = await tidings(tidings_server, "user", "disable", carol.username)
        assert answer["changed"] is True
        for raw in (phone, laptop):
            closed = await raw.recv()
            assert (closed["type"], closed["code"]) == ("_closed", 4001), closed
        await other.send({"type": "ping", "id": "still-here"})
        assert (await other.recv_type("pong"))["id"] == "still-here"
        await other.close()


async def test_a_password_reset_by_the_cli_signs_the_user_out_of_open_sessions(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        dora = await http.account()
        open_session, _ = await Raw.connect(session, tidings_server.ws_url, dora.token)
        answer = await tidings(tidings_server, "user", "reset", dora.username)
        assert answer["revoked_devices"] == 1
        closed = await open_session.recv()
        assert (closed["type"], closed["code"]) == ("_closed", 4001), closed


async def test_a_conversation_created_by_the_cli_reaches_open_sessions(
    tidings_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        alice, bob = await http.account(), await http.account()
        listening, _ = await Raw.connect(session, tidings_server.ws_url, bob.token)
        made = await tidings(
            tidings_server,
            "conversation",
            "create",
            "--creator",
            alice.username,
            bob.username,
        )
        cid = str(made["conversation_id"])
        # Bob's open session hears it only if the node relayed the command's
        # announcement and subscribed the session to the conversation. The
        # relay polls; the send is retried until it is heard, within a bound.
        async with asyncio.timeout(WAIT_S):
            for attempt in range(1000):
                status, body = await http.call(
                    "POST",
                    f"/v1/conversations/{cid}/messages",
                    alice.token,
                    {"client_msg_id": f"after-cli-{attempt}", "content": {"text": "hello"}},
                )
                assert status == 201, body
                try:
                    heard = await listening.recv_type("msg", timeout=1.0)
                except TimeoutError:
                    continue
                assert heard["conversation_id"] == cid
                break
            else:
                raise AssertionError("the session never heard the conversation")
        await listening.close()
