"""Where push requests may go: the allow-list on the URL, on the addresses a
name resolves to (so a name that points inside the network is refused when
the connection is made), and on every redirect."""

from __future__ import annotations

import pytest

from tests.features.push.support import Answer, Endpoint
from tidings.core.errors import TidingsError
from tidings.features.push.delivery import Poster, Result
from tidings.features.push.guard import AllowList, Policy


def _webhooks(allow: str = "") -> Policy:
    return Policy(AllowList(allow), strict=True)


def _webpush(allow: str = "") -> Policy:
    return Policy(AllowList(allow), strict=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://224.0.0.1/x",
    ],
)
def test_without_a_list_no_private_or_special_address_is_a_target(url: str) -> None:
    for policy in (_webhooks(), _webpush()):
        with pytest.raises(TidingsError, match="refused"):
            policy.check_url(url)


def test_without_a_list_public_addresses_and_names_pass_the_url_check() -> None:
    assert _webhooks().check_url("https://93.184.215.14/hook").host == "93.184.215.14"
    assert _webhooks().check_url("https://hooks.example.com/x").host == "hooks.example.com"


def test_a_list_admits_only_what_it_names_for_webhooks() -> None:
    policy = _webhooks("bridge.internal, *.corp.example, 127.0.0.1/32, 10.8.0.0/16")
    for url in (
        "http://bridge.internal/x",
        "http://a.b.corp.example/x",
        "http://127.0.0.1:8080/x",
        "http://10.8.3.4/x",
    ):
        policy.check_url(url)
    for url in ("http://127.0.0.2/x", "http://10.9.0.1/x", "https://hooks.example.com/x"):
        with pytest.raises(TidingsError, match="refused"):
            policy.check_url(url)
    # Web Push endpoints may still be public push services.
    _webpush("127.0.0.1/32").check_url("https://93.184.215.14/push")


def test_a_malformed_list_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="neither a host name nor a CIDR"):
        AllowList("10.0.0.0/8, http://x/")


async def test_a_name_that_resolves_to_a_refused_address_fails_at_connect() -> None:
    endpoint = await Endpoint().start()
    poster = Poster(_webhooks(), timeout_s=5)
    try:
        # "localhost" passes the URL check (no list: names are judged by their
        # addresses) and resolves to loopback, which the resolver refuses.
        outcome = await poster.post(endpoint.url("/x", host="localhost"), b"{}", {})
    finally:
        await poster.close()
        await endpoint.stop()
    assert outcome.result is Result.FAILED
    assert "no allowed address" in outcome.detail
    assert endpoint.received == []


async def test_a_redirect_is_checked_again() -> None:
    inside = await Endpoint().start()
    front = await Endpoint().start()
    front.answers["/hop"] = Answer(307, headers={"Location": inside.url("/secret", "127.0.0.2")})
    front.answers["/ok"] = Answer(308, headers={"Location": "/landed"})
    poster = Poster(_webhooks("127.0.0.1/32"), timeout_s=5)
    try:
        refused = await poster.post(front.url("/hop"), b"{}", {})
        followed = await poster.post(front.url("/ok"), b'{"n":1}', {})
    finally:
        await poster.close()
        await front.stop()
        await inside.stop()
    assert (refused.result, inside.received) == (Result.FAILED, [])
    assert "127.0.0.2" in refused.detail
    assert followed.result is Result.SENT
    assert [(r.path, r.body) for r in front.received[-1:]] == [("/landed", b'{"n":1}')]


@pytest.mark.parametrize(
    ("status", "result"),
    [(201, Result.SENT), (410, Result.GONE), (404, Result.GONE), (429, Result.RETRY),
     (503, Result.RETRY), (400, Result.FAILED), (413, Result.FAILED)],
)  # fmt: skip
async def test_answers_become_outcomes(status: int, result: Result) -> None:
    endpoint = await Endpoint().start()
    endpoint.answers["/x"] = Answer(status, headers={"Retry-After": "7"})
    poster = Poster(_webhooks("127.0.0.1/32"), timeout_s=5)
    try:
        outcome = await poster.post(endpoint.url("/x"), b"{}", {})
    finally:
        await poster.close()
        await endpoint.stop()
    assert outcome.result is result
    assert outcome.retry_after_s == (7.0 if result is Result.RETRY else None)
