"""Property-based fuzzing of the frame decoder, the WebSocket gateway and the HTTP API.

The live tests start ONE server per test on an event loop in a helper thread,
so that hypothesis (which is synchronous) drives it example by example over
one connection. Each example sends one fuzz frame followed by a ``ping``
fence and reads every reply up to the fence's ``pong``; replies are checked
against the protocol. Violations are collected (with the frame that caused
them) rather than raised at once, so that one run reports every distinct
problem and the after-checks (the connection is open, chatting works,
nothing was stored except by acknowledged sends) always run.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.badinput.support import (
    HTTP_ERROR_CODES,
    WS_ERROR_CODES,
    World,
    make_world,
)
from tests.conftest import RunningServer, make_settings, start_server
from tests.wire import WAIT_S, Raw
from tidings.app import BUILT_IN
from tidings.core import frames
from tidings.core.errors import ErrorCode
from tidings.features.host import content_kinds_of

T = TypeVar("T")

CLIENT_TYPES = sorted(frames.CLIENT_FRAME_TYPES)
FIELDS = [
    "id",
    "conversation_id",
    "client_msg_id",
    "content",
    "seq",
    "token",
    "since",
    "cursors",
    "limit",
    "state",
    "status",
    "user_ids",
    "client",
    "epoch",
]
FUZZ_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

text = st.text(st.characters(codec="utf-8"), max_size=24)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def encode_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- the decoder, directly -----------------------------------------------------------------


FRAME_CLASSES = (
    frames.Hello,
    frames.Sync,
    frames.Send,
    frames.Delivered,
    frames.Read,
    frames.TypingIn,
    frames.PresenceIn,
    frames.PresenceSubscribe,
    frames.Ping,
)
KINDS = content_kinds_of(BUILT_IN)
DECODER_CODES = {ErrorCode.BAD_FRAME, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE}


def typed_dicts(field_values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(CLIENT_TYPES), text, json_values)},
        optional=dict.fromkeys(FIELDS, field_values),
    )


decoder_inputs = st.one_of(
    st.binary(max_size=200),
    text,
    json_values.map(encode_json),
    typed_dicts(json_values).map(encode_json),
    typed_dicts(json_values).map(lambda d: encode_json(d).encode()),
)


@settings(FUZZ_SETTINGS, max_examples=1500)
@given(data=decoder_inputs)
def test_decoder_returns_a_frame_or_raises_frame_error(data: bytes | str) -> None:
    error: frames.FrameError | None = None
    try:
        frame = frames.decode_client_frame(data, 200, KINDS)
    except frames.FrameError as exc:
        error = exc
    else:
        assert isinstance(frame, FRAME_CLASSES), frame
        return
    assert error.code in DECODER_CODES, error
    assert error.ref is None or isinstance(error.ref, str)
    try:
        obj = json.loads(data)
    except ValueError:
        return
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        assert error.ref == obj["id"], (error, obj)
    elif not isinstance(obj, dict):
        assert error.ref is None, (error, obj)


# -- a live server on a helper thread ----------------------------------------------------------


class Live:
    """An event loop on a thread, running a server and its clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 3 * WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


@dataclass
class Fuzz:
    live: Live
    server: RunningServer
    session: aiohttp.ClientSession
    world: World
    raw: Raw
    epoch: str
    acked: dict[str, set[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    fences: int = 0

    def violation(self, what: str, sent: Any, got: Any) -> None:
        self.violations.append(f"{what}: sent {sent!r:.300} got {got!r:.300}")


@pytest.fixture
def fuzz(tmp_path: Path) -> Iterator[Fuzz]:
    live = Live()

    async def setup() -> Fuzz:
        server = await start_server(
            make_settings(
                tmp_path / "fuzz",
                sqlite_synchronous="normal",
                frame_rate_per_s=1e6,
                frame_burst=10**6,
                send_rate_per_s=1e6,
                send_burst=10**6,
            )
        )
        session = aiohttp.ClientSession()
        world = await make_world(server, session)
        raw, welcome = await Raw.connect(session, server.ws_url, world.alice.token)
        return Fuzz(live, server, session, world, raw, welcome["epoch"])

    state = live.run(setup())
    try:
        yield state
    finally:

        async def teardown() -> None:
            await state.raw.close()
            await state.session.close()
            await state.server.stop()

        live.run(teardown())
        live.close()


def expected_ref(sent: Any) -> tuple[bool, str | None]:
    """(strict, ref): the ref an error answering ``sent`` must carry."""
    if not isinstance(sent, dict):
        return True, None
    if isinstance(sent.get("id"), str):
        return True, sent["id"]
    if isinstance(sent.get("client_msg_id"), str):
        # A frame of another type with a stray client_msg_id: either is defensible.
        return sent.get("type") == "send", sent["client_msg_id"]
    return True, None


async def exchange(fz: Fuzz, kind: str, payload: Any) -> None:
    """Send one fuzz frame and check every reply up to a ping fence."""
    fz.fences += 1
    fence = f"fence-{fz.fences}"
    if kind == "bytes":
        await fz.raw.ws.send_bytes(payload)
    elif kind == "text":
        await fz.raw.send_text(payload)
    else:
        await fz.raw.send_text(encode_json(payload))
    await fz.raw.send({"type": "ping", "id": fence})
    while True:
        reply = await fz.raw.recv()
        if reply == {"type": "pong", "id": fence}:
            return
        if reply["type"] == "_closed":
            fz.violation("connection closed", payload, reply)
            fz.raw, _ = await Raw.connect(fz.session, fz.server.ws_url, fz.world.alice.token)
            return
        check_reply(fz, kind, payload, reply)


def check_reply(fz: Fuzz, kind: str, payload: Any, reply: dict[str, Any]) -> None:
    if reply.get("type") not in frames.SERVER_FRAME_TYPES:
        fz.violation("unknown server frame", payload, reply)
        return
    fz.seen.add(reply["type"] if reply["type"] != "error" else str(reply.get("code")))
    if reply["type"] == "ack":
        if not reply["duplicate"]:
            fz.acked.setdefault(reply["conversation_id"], set()).add(reply["client_msg_id"])
        return
    if reply["type"] != "error":
        return
    code = reply.get("code")
    if code not in WS_ERROR_CODES:
        fz.violation("unknown error code", payload, reply)
    elif code in {"internal", "unavailable", "unauthorized"}:
        fz.violation(f"{code} for a client frame", payload, reply)
    if set(reply) - {"type", "code", "message", "retryable", "ref", "retry_after_ms"}:
        fz.violation("unexpected error fields", payload, reply)
    if not isinstance(reply.get("message"), str) or reply.get("retryable") is not (
        code in {"rate_limited", "unavailable", "internal"}
    ):
        fz.violation("bad error shape", payload, reply)
    strict, ref = expected_ref(payload if kind == "json" else None)
    if strict and reply.get("ref") != ref:
        fz.violation(f"ref should be {ref!r}", payload, reply)


def ws_frames(fz: Fuzz) -> st.SearchStrategy[tuple[str, Any]]:
    w = fz.world
    conversation_ids = st.sampled_from([w.cid, w.foreign, "c_nope", "", "c" * 70]) | text
    field_values = st.one_of(
        json_values, conversation_ids, st.integers(-2, 2**60), text, st.just(w.alice.user_id)
    )
    contents = st.one_of(
        st.fixed_dictionaries(
            {"text": text},
            optional={
                "kind": st.sampled_from(["text", "member_added", "edit", "e2e"]) | text,
                "extra": json_values,
            },
        ),
        json_values,
    )
    sends = st.fixed_dictionaries(
        {
            "type": st.just("send"),
            "conversation_id": conversation_ids,
            "client_msg_id": st.text(st.characters(codec="utf-8"), max_size=130),
        },
        optional={"content": contents, "id": st.one_of(text, json_values)},
    )
    since = st.one_of(
        text,
        st.builds(lambda v: f"{fz.epoch}.{v}", st.integers(min_value=0)),
    )
    syncs = st.fixed_dictionaries(
        {"type": st.just("sync")},
        optional={
            "id": text,
            "since": since,
            "cursors": st.dictionaries(conversation_ids, st.integers(-1, 2**53), max_size=3),
            "limit": st.integers(-1, 20_000),
        },
    )
    cursors = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["delivered", "read"]),
            "conversation_id": conversation_ids,
            "seq": st.integers(-1, 2**54) | json_values,
        },
        optional={"id": text},
    )
    return st.one_of(
        st.tuples(st.just("bytes"), st.binary(max_size=100)),
        st.tuples(st.just("text"), st.text(st.characters(codec="utf-8"), max_size=100)),
        st.tuples(st.just("json"), json_values),
        st.tuples(st.just("json"), typed_dicts(field_values)),
        st.tuples(st.just("json"), sends),
        st.tuples(st.just("json"), syncs),
        st.tuples(st.just("json"), cursors),
    )


def test_fuzz_websocket_frames(fuzz: Fuzz) -> None:
    w = fuzz.world
    send = {
        "type": "send",
        "conversation_id": w.cid,
        "client_msg_id": "seed-1",
        "content": {"text": "hi"},
    }

    # Explicit examples make sure every kind of answer is exercised whatever
    # the generated frames happen to be (they depend on per-run ids).
    @FUZZ_SETTINGS
    @example(frame=("json", send))
    @example(frame=("json", {"type": "sync", "id": "seed-sync"}))
    @example(frame=("json", {**send, "conversation_id": w.foreign, "client_msg_id": "seed-2"}))
    @example(frame=("json", {"type": "no_such_type"}))
    @example(frame=("text", "{not json"))
    @given(frame=ws_frames(fuzz))
    def one(frame: tuple[str, Any]) -> None:
        fuzz.live.run(exchange(fuzz, *frame))

    one()
    # The fuzzer reached every kind of answer it is meant to exercise.
    assert {"ack", "sync_done", "bad_frame", "unknown_type", "not_member"} <= fuzz.seen, fuzz.seen

    async def after() -> None:
        w = fuzz.world
        await w.ping_works(fuzz.raw)
        acked = fuzz.acked
        assert set(acked) <= {w.cid}, acked
        mine = acked.get(w.cid, set())
        history = await w.history(w.alice, w.cid)
        assert await w.last_seq(w.alice, w.cid) == len(mine)
        assert [m["seq"] for m in history] == list(range(1, len(mine) + 1))
        assert {m["client_msg_id"] for m in history} == mine
        assert await w.last_seq(w.bob, w.foreign) == 0
        await w.chat_works(fuzz.raw)
        await w.chat_works()

    fuzz.live.run(after())
    assert not fuzz.violations, "\n".join(sorted(set(fuzz.violations))[:15])


# -- HTTP ---------------------------------------------------------------------------------------


async def http_exchange(fz: Fuzz, method: str, path: str, auth: str, body: Any) -> None:
    w = fz.world
    token = {"alice": w.alice.token, "none": None, "garbage": "tdg_garbage"}[auth]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else encode_json(body).encode()
    async with (
        asyncio.timeout(WAIT_S),
        fz.session.request(method, w.http.base + path, data=data, headers=headers) as resp,
    ):
        raw = await resp.read()
        status = resp.status
    sent = (method, path, auth, body)
    if status >= 500:
        fz.violation(f"HTTP {status}", sent, raw)
        return
    if status < 400:
        return
    try:
        answer = json.loads(raw)
        error = answer["error"]
        ok = (
            set(answer) == {"error"}
            and error["code"] in HTTP_ERROR_CODES
            and isinstance(error["message"], str)
            and isinstance(error["retryable"], bool)
        )
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        fz.violation(f"HTTP {status} without the error body", sent, raw)


def http_requests(fz: Fuzz) -> st.SearchStrategy[tuple[str, str, str, Any]]:
    w = fz.world
    cids = st.sampled_from([w.cid, w.foreign, "c_nope"])
    posts = st.one_of(
        st.just("/v1/auth/register"),
        st.just("/v1/auth/login"),
        st.just("/v1/conversations"),
        cids.map(lambda c: f"/v1/conversations/{c}/members"),
        cids.map(lambda c: f"/v1/conversations/{c}/messages"),
    )
    field_values = st.one_of(
        json_values,
        st.lists(st.sampled_from([w.bob.user_id, w.carol.user_id, "u_nope"]) | text, max_size=3),
        st.just("correct horse"),
        text,
    )
    bodies = st.one_of(
        st.binary(max_size=100),
        json_values,
        st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(
                (
                    "username",
                    "password",
                    "device_name",
                    "kind",
                    "members",
                    "title",
                    "user_ids",
                    "client_msg_id",
                    "content",
                ),
                field_values,
            ),
        ),
    )
    query_values = st.one_of(text, st.integers(-5, 10**20).map(str))
    gets = st.tuples(
        cids,
        st.dictionaries(
            st.sampled_from(["after_seq", "before_seq", "limit"]), query_values, max_size=3
        ),
    ).map(
        lambda t: (
            f"/v1/conversations/{t[0]}/messages?"
            + "&".join(f"{k}={quote(v, safe='')}" for k, v in t[1].items())
        )
    )
    user_gets = text.map(lambda name: f"/v1/users?username={quote(name, safe='')}") | text.map(
        lambda uid: f"/v1/users/{quote(uid, safe='')}x"
    )
    auths = st.sampled_from(["alice", "alice", "none", "garbage"])
    return st.one_of(
        st.tuples(st.just("POST"), posts, auths, bodies),
        st.tuples(st.just("GET"), gets | user_gets, auths, st.just(b"")),
    )


def test_fuzz_http_api(fuzz: Fuzz) -> None:
    @FUZZ_SETTINGS
    @given(request=http_requests(fuzz))
    def one(request: tuple[str, str, str, Any]) -> None:
        fuzz.live.run(http_exchange(fuzz, *request))

    one()

    async def after() -> None:
        w = fuzz.world
        assert await w.last_seq(w.bob, w.foreign) == 0
        await w.chat_works()

    fuzz.live.run(after())
    assert not fuzz.violations, "\n".join(sorted(set(fuzz.violations))[:15])
