"""The SDK's push calls against a real server, and a bridge's side of a
webhook: ``verify_webhook`` accepts the server's signature and nothing else."""

from __future__ import annotations

import aiohttp

from tests.conftest import ServerFactory
from tests.features.push.support import Browser, Endpoint
from tests.wire import Http
from tidings_client import Notification, TidingsHTTP, verify_webhook


async def test_the_sdk_subscribes_lists_and_unsubscribes_and_checks_signatures(
    server_factory: ServerFactory, endpoint: Endpoint
) -> None:
    server = await server_factory(changelog_poll_ms=50)
    async with aiohttp.ClientSession() as session:
        raw = Http(session, server.http_url)
        alice, bob = await raw.account(), await raw.account()
        cid = await raw.conversation(alice, "direct", [bob])
        async with TidingsHTTP(server.http_url, token=bob.token) as http:
            assert len(await http.vapid_public_key()) == 87  # an uncompressed P-256 point
            hook = await http.subscribe_webhook(endpoint.url("/bridge"))
            assert hook.secret
            browser = Browser().subscription(endpoint.url("/wp"))
            del browser["kind"]
            webpush = await http.subscribe_webpush(browser)
            assert webpush.secret is None
            listed = await http.push_subscriptions()
            assert {(s.subscription_id, s.kind) for s in listed} == {
                (hook.subscription_id, "webhook"),
                (webpush.subscription_id, "webpush"),
            }
            assert await http.set_push_previews(False) is False
            await http.unsubscribe_push(webpush.subscription_id)
            assert [s.subscription_id for s in await http.push_subscriptions()] == [
                hook.subscription_id
            ]
        status, _ = await raw.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            alice.token,
            {"client_msg_id": "x", "content": {"text": "psst"}},
        )
        assert status == 201
        [request] = await endpoint.wait_for("/bridge")
    signature = request.headers["X-Tidings-Signature"]
    assert verify_webhook(hook.secret, request.body, signature) == Notification(
        cid, 1, alice.user_id, 1
    )
    assert verify_webhook(hook.secret, request.body + b" ", signature) is None
    assert verify_webhook("another secret", request.body, signature) is None
    assert verify_webhook(hook.secret, request.body, None) is None
    assert endpoint.at("/wp") == []
