"""Session lifecycle: hello/welcome, logout ending live sessions."""

from __future__ import annotations

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Http, Raw


async def test_welcome_echoes_the_hello_id(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        acc = await http.account()
        conn = await Raw.open(session, tidings_server.ws_url)
        await conn.send({"type": "hello", "token": acc.token, "id": "h1"})
        welcome = await conn.recv()
        assert welcome["type"] == "welcome"
        assert welcome["id"] == "h1"
        assert welcome["device_id"] == acc.device_id
        await conn.close()


async def test_logout_closes_that_devices_sessions_only(tidings_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        phone = await http.account(device="phone")
        laptop = await http.login(phone.username, device="laptop")
        on_phone, _ = await Raw.connect(session, tidings_server.ws_url, phone.token)
        on_laptop, _ = await Raw.connect(session, tidings_server.ws_url, laptop.token)
        status, _ = await http.call("POST", "/v1/auth/logout", phone.token)
        assert status == 204
        closed = await on_phone.recv()
        assert closed["type"] == "_closed"
        assert closed["code"] == 4001
        await on_laptop.send({"type": "ping", "id": "still-here"})
        assert (await on_laptop.recv_type("pong"))["id"] == "still-here"
        status, _ = await http.call("GET", "/v1/conversations", phone.token)
        assert status == 401
        await on_laptop.close()
