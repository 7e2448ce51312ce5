"""Golden wire fixtures: the server's types and the SDK's agree, field for field.

The SDK must not import server code (an import-linter contract), so each side
keeps its own msgspec types. The JSON files in ``tests/wire_fixtures`` are the
one statement of the wire format that both must honour: every frame of
docs/protocol.md (``client/``, ``server/``) and every HTTP body (``http/``),
with every optional field present in at least one of them. A file named
``<kind>--<variant>.json`` is a further example of ``<kind>`` (a frame with
its optional fields left out).

For each fixture, the side that writes it in production must re-encode it
exactly (the server its frames and answers, the SDK its frames and request
bodies, through its own sender). The side that only reads it must keep every
field: its re-encoding, less the optional fields the fixture leaves out (which
it fills in with their defaults), is the fixture again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import msgspec
import pytest

import tidings_client.frames as sdk
from tidings.app import BUILT_IN
from tidings.core import frames as server
from tidings.features.host import content_kinds_of
from tidings.features.messaging.routes import (
    ConversationSettingsBody,
    HiddenOut,
    HideBody,
    MemberStateBody,
    MemberStateOut,
)
from tidings.http import schemas
from tidings_client.frames import ConversationState
from tidings_client.http import (
    Conversation,
    HiddenSet,
    LoginResult,
    TidingsHTTP,
    User,
    _AckOut,
    _ConversationListOut,
    _ErrorBody,
    _MemberListOut,
    _MembersChangedOut,
    _MessageListOut,
    _RegisterOut,
    _ViewOut,
)

FIXTURES = Path(__file__).parent / "wire_fixtures"
MAX_CONTENT_BYTES = 64 * 1024

# Fields the SDK neither sends nor reads. Every client frame may carry an
# `id`, but the SDK sets one only where it matches the answer by it (sync,
# send, ping, reconcile); without one in its hello, welcome.id never comes.
SDK_UNMODELLED: dict[str, frozenset[str]] = {
    "client/hello": frozenset({"id"}),
    "client/delivered": frozenset({"id"}),
    "client/read": frozenset({"id"}),
    "client/typing": frozenset({"id"}),
    "client/presence": frozenset({"id"}),
    "client/presence_subscribe": frozenset({"id"}),
    "server/welcome": frozenset({"id"}),
}

T = TypeVar("T")
SdkCall = Callable[[TidingsHTTP, dict[str, Any]], Awaitable[object]]
CONVERSATION_ID = "c_0195f3a2c5c6d7e8f9a0b1c2d3e4f5a6"

# Request bodies: the server's type, how the SDK sends one (its public call,
# given the fixture's values), and the fixture of the answer the call expects.
HTTP_REQUESTS: dict[str, tuple[type[msgspec.Struct], SdkCall, str]] = {
    "register.request": (
        server.RegisterBody,
        lambda http, body: http.register(body["username"], body["password"]),
        "register.response",
    ),
    "login.request": (
        server.LoginBody,
        lambda http, body: http.login(body["username"], body["password"], body["device_name"]),
        "login.response",
    ),
    "create_group.request": (
        server.CreateConversationBody,
        lambda http, body: http.create_group(body["title"], body["members"]),
        "conversation.response",
    ),
    "create_direct.request": (
        server.CreateConversationBody,
        lambda http, body: http.create_direct(*body["members"]),
        "conversation.response",
    ),
    "add_members.request": (
        server.MembersBody,
        lambda http, body: http.add_members(CONVERSATION_ID, body["user_ids"]),
        "members_changed.response",
    ),
    "hide.request": (
        HideBody,
        lambda http, body: http.hide(CONVERSATION_ID, body["seqs"], body["hidden"]),
        "hidden.response",
    ),
    "member_state.request": (
        MemberStateBody,
        lambda http, body: http.set_state(CONVERSATION_ID, **body),
        "member_state.response",
    ),
    "conversation_settings.request": (
        ConversationSettingsBody,
        lambda http, body: http.update_conversation(CONVERSATION_ID, **body),
        "conversation.response",
    ),
    "post_message.request": (
        server.PostMessageBody,
        lambda http, body: http.post_message(
            CONVERSATION_ID, body["client_msg_id"], body["content"]
        ),
        "post_message.response",
    ),
}

# Response bodies: the server's type and the SDK's (private: the SDK unwraps
# them). None: the SDK makes no such call (health probes are for load balancers).
HTTP_RESPONSES: dict[str, tuple[type[msgspec.Struct], type[msgspec.Struct] | None]] = {
    "error.response": (schemas.ErrorBody, _ErrorBody),
    "register.response": (schemas.RegisterOut, _RegisterOut),
    "login.response": (schemas.LoginOut, LoginResult),
    "user.response": (schemas.UserOut, User),
    "conversation.response": (schemas.ConversationOut, Conversation),
    "conversation_list.response": (schemas.ConversationListOut, _ConversationListOut),
    "members_changed.response": (schemas.MembersChangedOut, _MembersChangedOut),
    "receipts.response": (schemas.MemberListOut, _MemberListOut),
    "history.response": (schemas.MessageListOut, _MessageListOut),
    "view.response": (schemas.ViewListOut, _ViewOut),
    "hidden.response": (HiddenOut, HiddenSet),
    "member_state.response": (MemberStateOut, ConversationState),
    "post_message.response": (schemas.AckOut, _AckOut),
    "health.response": (schemas.HealthOut, None),
}

KINDS = content_kinds_of(BUILT_IN)
"""The content kinds a node serves by default (text, edit, delete, reaction)."""


def _fixtures(folder: str) -> list[Path]:
    return sorted((FIXTURES / folder).glob("*.json"))


def _kind(path: Path) -> str:
    """``pong--without-id.json`` -> ``pong``; ``error--x.response.json`` -> ``error.response``."""
    return re.sub(r"--[^.]*", "", path.stem)


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _without(fixture: Any, fields: frozenset[str]) -> Any:
    return {key: value for key, value in fixture.items() if key not in fields}


def _encoded(value: object) -> Any:
    return json.loads(msgspec.json.encode(value))


def _pruned(actual: Any, expected: Any) -> Any:
    """``actual`` without the keys ``expected`` lacks: the defaults a reader filled in."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        return {k: _pruned(v, expected.get(k)) for k, v in actual.items() if k in expected}
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        return [_pruned(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


def assert_written(value: object, fixture: Any) -> None:
    """The writer of a frame or body encodes the fixture exactly."""
    assert _encoded(value) == fixture


def assert_read(value: object, fixture: Any) -> None:
    """A reader keeps every field of the fixture, with the same value."""
    assert _pruned(_encoded(value), fixture) == fixture


def _ids(paths: list[Path]) -> list[str]:
    return [_name(path) for path in paths]


# -- completeness ------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "server_types", "sdk_union"),
    [
        ("client", server.CLIENT_FRAME_TYPES, sdk.ClientFrame),
        ("server", server.SERVER_FRAME_TYPES, sdk.ServerFrame),
    ],
)
def test_every_frame_type_has_a_fixture_and_every_fixture_a_frame_type(
    folder: str, server_types: frozenset[str], sdk_union: object
) -> None:
    kinds = {_kind(path) for path in _fixtures(folder)}
    assert kinds == server_types
    assert kinds == sdk.frame_types(sdk_union)


def test_every_http_body_has_a_fixture_and_every_fixture_a_body() -> None:
    kinds = {_kind(path) for path in _fixtures("http")}
    assert kinds == HTTP_REQUESTS.keys() | HTTP_RESPONSES.keys()
    listed = [kind for kind, *_ in HTTP_REQUESTS.values()]
    listed += [kind for kind, _ in HTTP_RESPONSES.values()]
    _, components = msgspec.json.schema_components(listed)
    declared = {
        name
        for module, names in ((schemas, vars(schemas)), (server, vars(server)))
        for name, value in names.items()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
        and (module is schemas or name.endswith("Body"))
    }
    assert declared <= components.keys()


def _server_type(path: Path) -> type[msgspec.Struct]:
    kind = _kind(path)
    if path.parent.name == "http":
        return HTTP_REQUESTS[kind][0] if kind in HTTP_REQUESTS else HTTP_RESPONSES[kind][0]
    union = server.ClientFrame if path.parent.name == "client" else server.ServerFrame
    (member,) = [t for t in get_args(union) if t.__struct_config__.tag == kind]
    return member  # type: ignore[no-any-return]


def test_every_optional_field_of_the_server_is_in_a_fixture() -> None:
    present: dict[type[msgspec.Struct], set[str]] = {}
    for folder in ("client", "server", "http"):
        for path in _fixtures(folder):
            present.setdefault(_server_type(path), set()).update(_load(path))
    missing = {
        f"{kind.__name__}.{field.encode_name}"
        for kind, keys in present.items()
        for field in msgspec.structs.fields(kind)
        if not field.required and field.encode_name not in keys
    }
    assert not missing


def test_the_fields_the_sdk_leaves_out_are_optional_on_the_server() -> None:
    for name, fields in SDK_UNMODELLED.items():
        kind = _server_type(FIXTURES / f"{name}.json")
        required = {f.encode_name for f in msgspec.structs.fields(kind) if f.required}
        assert not fields & required, name


# -- WebSocket frames ----------------------------------------------------------


@pytest.mark.parametrize("path", _fixtures("server"), ids=_ids(_fixtures("server")))
def test_server_frames_round_trip(path: Path) -> None:
    fixture = _load(path)
    assert_written(msgspec.json.decode(path.read_bytes(), type=server.ServerFrame), fixture)
    decoded = msgspec.json.decode(path.read_bytes(), type=sdk.ServerFrame)
    assert_read(decoded, _without(fixture, SDK_UNMODELLED.get(_name(path), frozenset())))


@pytest.mark.parametrize("path", _fixtures("client"), ids=_ids(_fixtures("client")))
def test_client_frames_round_trip(path: Path) -> None:
    fixture = _load(path)
    decoded = server.decode_client_frame(path.read_bytes(), MAX_CONTENT_BYTES, KINDS)
    assert_read(decoded, fixture)
    sent = msgspec.json.decode(path.read_bytes(), type=sdk.ClientFrame)
    assert_written(sent, _without(fixture, SDK_UNMODELLED.get(_name(path), frozenset())))


# -- HTTP bodies -----------------------------------------------------------------


class _RecordingHTTP(TidingsHTTP):
    """The SDK's HTTP client with the network replaced: it records the body a
    call sends and answers with a fixture."""

    def __init__(self, answer: bytes) -> None:
        super().__init__("http://tidings.invalid", token="tdg_fixture")
        self.answer = answer
        self.sent: object = None

    async def _call(
        self,
        method: str,
        path: str,
        answer: type[T],
        body: object = None,
        *,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> T:
        self.sent = body
        return msgspec.json.decode(self.answer, type=answer)


@pytest.mark.parametrize("kind", sorted(HTTP_REQUESTS))
async def test_http_requests_round_trip(kind: str) -> None:
    server_type, sdk_call, answer = HTTP_REQUESTS[kind]
    path = FIXTURES / "http" / f"{kind}.json"
    fixture = _load(path)
    assert_read(server.decode_body(path.read_bytes(), server_type), fixture)
    http = _RecordingHTTP((FIXTURES / "http" / f"{answer}.json").read_bytes())
    await sdk_call(http, fixture)
    assert_written(http.sent, fixture)


_RESPONSES = [path for path in _fixtures("http") if _kind(path) in HTTP_RESPONSES]


@pytest.mark.parametrize("path", _RESPONSES, ids=_ids(_RESPONSES))
def test_http_responses_round_trip(path: Path) -> None:
    server_type, sdk_type = HTTP_RESPONSES[_kind(path)]
    fixture = _load(path)
    assert_written(msgspec.json.decode(path.read_bytes(), type=server_type), fixture)
    if sdk_type is not None:
        assert_read(msgspec.json.decode(path.read_bytes(), type=sdk_type), fixture)
