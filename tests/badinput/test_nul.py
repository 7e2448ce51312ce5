"""A NUL character in an id, idempotency key, name or title is refused at the
protocol edge, alike on both backends (PostgreSQL's text cannot hold one, and
failed the statement with an ``internal`` error where SQLite answered), and
changes nothing stored. (The PostgreSQL store maps the driver's error to
``bad_request`` too: tests/store/test_postgres.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.badinput.support import (
    World,
    assert_http_error,
    raw_call,
    rejected_on_open_connection,
)
from tests.services_postgres import postgres_service

__all__ = ["postgres_service"]

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgres"])

NUL = "\x00"


def _frames(cid: str) -> list[tuple[dict[str, Any], str | None]]:
    text = {"kind": "text", "text": "x"}
    return [
        (
            {
                "type": "send",
                "id": "n1",
                "conversation_id": cid + NUL,
                "client_msg_id": "c",
                "content": text,
            },
            "n1",
        ),
        (
            {
                "type": "send",
                "id": "n2",
                "conversation_id": cid,
                "client_msg_id": "c" + NUL,
                "content": text,
            },
            "n2",
        ),
        ({"type": "delivered", "id": "n3", "conversation_id": NUL + cid, "seq": 1}, "n3"),
        ({"type": "presence_subscribe", "id": "n4", "user_ids": ["u" + NUL]}, "n4"),
        ({"type": "sync", "id": "n5", "cursors": {cid + NUL: 0}}, "n5"),
    ]


@pytest.mark.parametrize("case", range(5))
async def test_nul_in_a_frame_is_bad_frame(world: World, case: int) -> None:
    frame, ref = _frames(world.cid)[case]
    await rejected_on_open_connection(world, frame, "bad_frame", ref)


def _requests(world: World) -> list[tuple[str, str, bytes | None]]:
    cid = world.cid
    return [
        ("GET", f"/v1/conversations/{cid}%00/messages", None),
        (
            "POST",
            f"/v1/conversations/{cid}%00/messages",
            b'{"client_msg_id": "c", "content": {"kind": "text", "text": "x"}}',
        ),
        (
            "POST",
            f"/v1/conversations/{cid}/messages",
            b'{"client_msg_id": "c\\u0000", "content": {"kind": "text", "text": "x"}}',
        ),
        ("GET", "/v1/users/u%00", None),
        ("GET", "/v1/users?username=bob%00", None),
        ("POST", "/v1/conversations", b'{"kind": "group", "title": "t\\u0000", "members": []}'),
    ]


@pytest.mark.parametrize("case", range(6))
async def test_nul_in_an_http_request_is_bad_request(world: World, case: int) -> None:
    method, path, body = _requests(world)[case]
    before = await world.snapshot()
    status, answer, _ = await raw_call(world, method, path, world.alice.token, body)
    assert_http_error(status, answer, "bad_request")
    assert await world.snapshot() == before
    await world.chat_works()
