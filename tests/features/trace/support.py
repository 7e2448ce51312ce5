"""Helpers of the trace tests: connections that say their network, the admin
call, and ``tidings trace`` run as an operator runs it."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tests.procs import node_env
from tests.wire import WAIT_S, Account, Http, Raw, poll


async def connect(
    session: aiohttp.ClientSession, ws_url: str, account: Account, network: str
) -> Raw:
    raw = await Raw.open(session, ws_url)
    await raw.send({"type": "hello", "token": account.token, "client": {"network": network}})
    welcome = await raw.recv()
    assert welcome["type"] == "welcome", welcome
    return raw


@dataclass
class Direct:
    """A moderator (who may read traces) and two users in a direct conversation."""

    http: Http
    admin: Account
    a: Account
    b: Account
    cid: str

    @classmethod
    async def make(cls, http: Http, moderator: str) -> Direct:
        admin = await http.account(moderator)
        a, b = await http.account(), await http.account()
        return cls(http, admin, a, b, await http.conversation(a, "direct", [b]))

    def send(self, client_msg_id: str, text: str = "hi") -> dict[str, Any]:
        """A ``send`` frame in the conversation."""
        return {
            "type": "send",
            "conversation_id": self.cid,
            "client_msg_id": client_msg_id,
            "content": {"text": text},
        }

    def cursor(self, kind: str, seq: int) -> dict[str, Any]:
        """A ``delivered`` or ``read`` frame in the conversation."""
        return {"type": kind, "conversation_id": self.cid, "seq": seq}


async def admin_trace(http: Http, token: str, ident: str) -> tuple[int, Any]:
    return await http.call("GET", f"/v1/admin/trace/{ident}", token)


async def stages_when(
    http: Http, token: str, ident: str, done: set[str], timeout: float = WAIT_S
) -> list[dict[str, Any]]:
    """The admin call's stages once every stage in ``done`` is among them
    (events reach the store in batches, a few tens of milliseconds apart)."""
    last: list[dict[str, Any]] = []

    async def check() -> bool:
        nonlocal last
        status, body = await admin_trace(http, token, ident)
        last = body["stages"] if status == 200 else []
        return done <= {s["stage"] for s in last}

    for _ in range(int(timeout / 0.1) + 1):
        if await check():
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"stages {done} not all traced within {timeout} s: {last}")


async def tidings_trace(store: str, *args: str) -> tuple[int, str, str]:
    """``tidings trace`` in a subprocess against ``store``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        "trace",
        *args,
        "--store",
        store,
        env=node_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S * 3)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]


__all__ = ["Direct", "admin_trace", "connect", "json_lines", "poll", "stages_when", "tidings_trace"]
