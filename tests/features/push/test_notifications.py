"""Push end to end, on both deployments: a member's device that is offline (or
did not acknowledge in time) is told once per conversation, collapsed; an
online device that acknowledges is not; mute, mentions, previews, Web Push
encryption, 410 and a hanging endpoint behave as docs/protocol.md says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from py_vapid import Vapid02

from tests.conftest import RunningServer, ServerFactory
from tests.features.push.conftest import DELAY_MS
from tests.features.push.support import Answer, Browser, Endpoint
from tests.wire import WAIT_S, Account, Http, Raw
from tidings.core.content_kinds import ContentHead, ContentKind
from tidings.features import Feature

SETTLE_S = DELAY_MS * 3 / 1000
"""How long to keep listening after the last expected notification, so that an
extra one (a notification not collapsed, or sent twice) would be seen."""


def _no_text(_: ContentHead) -> str:
    return ""


SEALED = Feature("sealed", content_kinds=[ContentKind("sealed", ContentHead, _no_text)])
"""A kind whose content the server cannot read (as an e2e envelope): no preview."""


@dataclass
class Chat:
    """A server, Alice and Bob, and a conversation between them."""

    server: RunningServer
    session: aiohttp.ClientSession
    http: Http
    alice: Account
    bob: Account
    cid: str


@contextlib.asynccontextmanager
async def _chat(
    server_factory: ServerFactory, kind: str = "direct", *features: Feature
) -> AsyncIterator[Chat]:
    server = await server_factory(features=list(features), changelog_poll_ms=50)
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        alice, bob = await http.account(), await http.account()
        cid = await http.conversation(alice, kind, [bob])
        yield Chat(server, session, http, alice, bob, cid)


async def _send(http: Http, who: Account, cid: str, content: dict[str, Any]) -> dict[str, Any]:
    status, body = await http.call(
        "POST",
        f"/v1/conversations/{cid}/messages",
        who.token,
        {"client_msg_id": f"m{time.monotonic_ns()}", "content": content},
    )
    assert status == 201, body
    result: dict[str, Any] = body
    return result


async def _subscribe(http: Http, who: Account, body: dict[str, Any]) -> dict[str, Any]:
    status, created = await http.call("POST", "/v1/push/subscriptions", who.token, body)
    assert status == 201, created
    result: dict[str, Any] = created
    return result


async def _metric(http: Http, name: str) -> float:
    async with http.session.get(http.base + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_an_offline_device_is_told_once_per_conversation_collapsed_and_signed(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    async with _chat(server_factory) as chat:
        http, alice, bob, direct = chat.http, chat.alice, chat.bob, chat.cid
        group = await http.conversation(alice, "group", [bob])
        created = await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/bob")})
        assert endpoint.received == []  # subscribing sends nothing

        first = await _send(http, alice, direct, {"text": "one"})
        for text in ("two", "three"):
            await _send(http, alice, direct, {"text": text})
        await _send(http, alice, group, {"text": "hi team"})

        await endpoint.wait_for("/bob", 2)
        await asyncio.sleep(SETTLE_S)
    told = {r.json()["conversation_id"]: r for r in endpoint.at("/bob")}
    assert len(endpoint.at("/bob")) == 2, [r.json() for r in endpoint.at("/bob")]
    assert told[direct].json() == {
        "type": "message",
        "conversation_id": direct,
        "seq": 3,
        "sender_id": alice.user_id,
        "count": 3,
        "preview": "three",
    }
    assert told[group].json()["count"] == 1
    for received in told.values():
        mac = hmac.new(created["secret"].encode(), received.body, hashlib.sha256).hexdigest()
        assert received.headers["X-Tidings-Signature"] == f"sha256={mac}"
    # Within the delay (and the change log's and dispatcher's polls) of the first message.
    assert told[direct].at - first["ts"] / 1000 < DELAY_MS / 1000 + 1.0


async def test_an_online_device_that_acknowledges_is_not_told(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    async with _chat(server_factory) as chat:
        http, alice, bob, cid = chat.http, chat.alice, chat.bob, chat.cid
        await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/bob")})
        ws, _ = await Raw.connect(chat.session, chat.server.ws_url, bob.token)
        await _send(http, alice, cid, {"text": "are you there?"})
        frame = await ws.recv_type("msg")
        await ws.send({"type": "delivered", "conversation_id": cid, "seq": frame["seq"]})
        skipped = 0.0
        for _ in range(int(WAIT_S / 0.05)):
            skipped = await _metric(http, "tidings_push_skipped_total")
            if skipped:
                break
            await asyncio.sleep(0.05)
        await ws.close()
    assert skipped == 1
    assert endpoint.received == []


async def test_a_muted_conversation_notifies_only_on_a_mention(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    async with _chat(server_factory, "group") as chat:
        http, alice, bob, cid = chat.http, chat.alice, chat.bob, chat.cid
        status, body = await http.call(
            "PUT", f"/v1/conversations/{cid}/state", bob.token, {"muted_until": -1}
        )
        assert status == 200, body
        await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/bob")})
        await _send(http, alice, cid, {"text": "lunch?"})
        await _send(http, alice, cid, {"text": "@bob lunch?", "mentions": [bob.user_id]})
        await endpoint.wait_for("/bob")
        await asyncio.sleep(SETTLE_S)
    [told] = endpoint.at("/bob")
    assert told.json() == {
        "type": "message",
        "conversation_id": cid,
        "seq": 2,
        "sender_id": alice.user_id,
        "count": 1,
        "mention": True,
        "preview": "@bob lunch?",
    }


async def test_no_preview_when_the_user_turned_them_off_or_the_server_cannot_read_it(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    async with _chat(server_factory, "direct", SEALED) as chat:
        http, alice, bob, with_bob = chat.http, chat.alice, chat.bob, chat.cid
        carol = await http.account()
        with_carol = await http.conversation(alice, "direct", [carol])
        await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/bob")})
        await _subscribe(http, carol, {"kind": "webhook", "url": endpoint.url("/carol")})
        assert await http.call("GET", "/v1/push/settings", bob.token) == (200, {"previews": True})
        status, _ = await http.call("PUT", "/v1/push/settings", bob.token, {"previews": False})
        assert status == 200
        await _send(http, alice, with_bob, {"text": "secret plans"})
        await _send(http, alice, with_carol, {"kind": "sealed", "blob": "b3BhcXVl"})
        [to_bob] = await endpoint.wait_for("/bob")
        [to_carol] = await endpoint.wait_for("/carol")
    assert "preview" not in to_bob.json()
    assert b"secret" not in to_bob.body
    assert to_carol.json()["count"] == 1
    assert "preview" not in to_carol.json()


async def test_web_push_is_encrypted_to_the_subscription_and_signed_with_vapid(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    browser = Browser()
    async with _chat(server_factory) as chat:
        http, alice, bob, cid = chat.http, chat.alice, chat.bob, chat.cid
        status, vapid = await http.call("GET", "/v1/push/vapid", bob.token)
        assert status == 200
        created = await _subscribe(http, bob, browser.subscription(endpoint.url("/wp/bob")))
        assert set(created) == {"subscription_id"}
        await _send(http, alice, cid, {"text": "hello browser", "mentions": [bob.user_id]})
        [pushed] = await endpoint.wait_for("/wp/bob")
    assert b"hello browser" not in pushed.body
    assert browser.decrypt(pushed.body) == {
        "type": "message",
        "conversation_id": cid,
        "seq": 1,
        "sender_id": alice.user_id,
        "count": 1,
        "mention": True,
        "preview": "hello browser",
    }
    headers = pushed.headers
    assert headers["Content-Encoding"] == "aes128gcm"
    assert headers["Urgency"] == "high"
    assert int(headers["TTL"]) > 0
    assert 0 < len(headers["Topic"]) <= 32
    authorization = headers["Authorization"]
    assert authorization.endswith(f",k={vapid['public_key']}")
    assert Vapid02.verify(authorization)
    token = authorization.split("t=", 1)[1].split(",", 1)[0]
    claims_part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
    assert claims["aud"] == f"http://127.0.0.1:{endpoint.port}"
    assert claims["sub"].startswith("mailto:")
    assert claims["exp"] > time.time()


async def test_an_endpoint_that_answers_410_loses_its_subscription(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    endpoint.answers["/gone"] = Answer(410)
    async with _chat(server_factory) as chat:
        http, alice, bob, cid = chat.http, chat.alice, chat.bob, chat.cid
        await _subscribe(http, bob, Browser().subscription(endpoint.url("/gone")))
        keep = await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/kept")})
        await _send(http, alice, cid, {"text": "anyone?"})
        await endpoint.wait_for("/gone")
        await endpoint.wait_for("/kept")
        listed: list[str] = []
        for _ in range(int(WAIT_S / 0.05)):
            _, body = await http.call("GET", "/v1/push/subscriptions", bob.token)
            listed = [s["subscription_id"] for s in body["subscriptions"]]
            if len(listed) == 1:
                break
            await asyncio.sleep(0.05)
        removed = await _metric(http, 'tidings_push_subscriptions_removed_total{reason="gone"}')
    assert listed == [keep["subscription_id"]]
    assert removed == 1


async def test_a_hanging_webhook_does_not_delay_another_users_notification(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    endpoint.answers["/hangs"] = Answer(delay_s=30)
    async with _chat(server_factory) as chat:
        http, alice, bob, to_bob = chat.http, chat.alice, chat.bob, chat.cid
        carol = await http.account()
        to_carol = await http.conversation(alice, "direct", [carol])
        await _subscribe(http, carol, {"kind": "webhook", "url": endpoint.url("/hangs")})
        await _subscribe(http, bob, {"kind": "webhook", "url": endpoint.url("/bob")})
        await _send(http, alice, to_carol, {"text": "for carol"})
        await endpoint.wait_for("/hangs")  # carol's request is now hanging
        sent = await _send(http, alice, to_bob, {"text": "for bob"})
        [told] = await endpoint.wait_for("/bob")
    due = sent["ts"] / 1000 + DELAY_MS / 1000
    assert told.at - due < 1.0


async def test_bad_subscriptions_are_refused_and_nothing_is_stored(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    async with _chat(server_factory) as chat:
        http, bob = chat.http, chat.bob
        good_keys = Browser().subscription("https://push.example/x")["keys"]
        cases: list[tuple[dict[str, Any], str]] = [
            ({"kind": "webhook", "url": "http://10.0.0.1/hook"}, "10.0.0.1"),
            ({"kind": "webhook", "url": "http://localhost:1/hook"}, "not in the allow-list"),
            ({"kind": "webhook", "url": "ftp://127.0.0.1/x"}, "only http and https"),
            ({"kind": "webhook", "url": "http://u:p@127.0.0.1/x"}, "credentials"),
            ({"kind": "webhook"}, "a url only"),
            ({"kind": "webpush", "endpoint": endpoint.url("/x")}, "endpoint and keys"),
            (
                {
                    "kind": "webpush",
                    "endpoint": endpoint.url("/x"),
                    "keys": {"p256dh": "AAAA", "auth": good_keys["auth"]},
                },
                "P-256",
            ),
            (
                {"kind": "webpush", "endpoint": "http://169.254.169.254/x", "keys": good_keys},
                "169.254.169.254",
            ),
            ({"kind": "sms", "url": endpoint.url("/x")}, "invalid"),
        ]
        for body, expected in cases:
            status, answer = await http.call("POST", "/v1/push/subscriptions", bob.token, body)
            assert status == 400, (body, answer)
            assert answer["error"]["code"] == "bad_request"
            assert expected in answer["error"]["message"], (body, answer)
        status, listed = await http.call("GET", "/v1/push/subscriptions", bob.token)
        assert (status, listed) == (200, {"subscriptions": []})
        status, answer = await http.call("DELETE", "/v1/push/subscriptions/ps_nosuch", bob.token)
        assert status == 404, answer
    assert endpoint.received == []
