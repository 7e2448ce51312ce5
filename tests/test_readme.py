"""The README's Python tour runs as written (against a test server)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import aiohttp

from tests.conftest import RunningServer
from tests.wire import Http

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    return str(blocks[0])


EXPECTED_OUTPUT = ["1 {'text': 'hello bob'}", "stored as seq 2"]
"""What the tour prints against a server prepared by :func:`prepare_tour`."""


def tour_code(port: int) -> str:
    """The README's Python block, aimed at a test server's port."""
    return _python_block().replace("127.0.0.1:8080", f"127.0.0.1:{port}")


async def prepare_tour(tidings_server: RunningServer) -> None:
    """The accounts and first message the README's curl commands create."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        for name, password in (("alice", "alice-secret"), ("bob", "bob-secret!")):
            status, _ = await http.call(
                "POST", "/v1/auth/register", json={"username": name, "password": password}
            )
            assert status == 201
        status, alice = await http.call(
            "POST", "/v1/auth/login", json={"username": "alice", "password": "alice-secret"}
        )
        status, bob = await http.call("GET", "/v1/users?username=bob", alice["token"])
        status, conv = await http.call(
            "POST",
            "/v1/conversations",
            alice["token"],
            {"kind": "direct", "members": [bob["user_id"]]},
        )
        status, _ = await http.call(
            "POST",
            f"/v1/conversations/{conv['conversation_id']}/messages",
            alice["token"],
            {"client_msg_id": "hello", "content": {"text": "hello bob"}},
        )
        assert status == 201


async def test_readme_python_tour(tidings_server: RunningServer) -> None:
    await prepare_tour(tidings_server)
    code = tour_code(tidings_server.port).replace("asyncio.run(main())", "")
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    out = io.StringIO()
    main = namespace["main"]
    assert callable(main)
    with contextlib.redirect_stdout(out):
        await asyncio.wait_for(main(), 30)
    assert out.getvalue().splitlines() == EXPECTED_OUTPUT
