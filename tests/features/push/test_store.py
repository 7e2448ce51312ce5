"""The push store's contracts (``features/push/port.py``) on both engines:
noting is idempotent and collapses, mute and mentions, signed-out devices,
what a device acknowledged is dropped, claims are exclusive, retries merge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services_postgres import PostgresService, create_test_database, drop_test_databases
from tests.store.support import (
    GROUP,
    NOW,
    Pair,
    expect_error,
    make_device,
    make_user,
    pair,
    send_many,
    text,
)
from tidings.core.errors import ErrorCode
from tidings.core.models import MUTED_FOR_EVER
from tidings.core.ports.store.composite import Store
from tidings.core.schema import SchemaComponent
from tidings.features.push.port import Claims, Noted, PushStore, Subscription
from tidings.features.push.postgres import PostgresPushStore
from tidings.features.push.sqlite import SqlitePushStore
from tidings.store.postgres import PostgresStore
from tidings.store.sqlite import SqliteStore

PUSH_SCHEMA = [SchemaComponent("push", "tidings.features.push")]
DELAY = 5000
DUE = NOW + DELAY


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_service: PostgresService
) -> AsyncIterator[tuple[Store, PushStore]]:
    store: Store
    if request.param == "sqlite":
        store = SqliteStore(str(tmp_path / "tidings.db"), components=PUSH_SCHEMA)
    else:
        store = PostgresStore(await create_test_database(), components=PUSH_SCHEMA)
    await store.start()
    database = store.engine_access()
    push: PushStore = (
        SqlitePushStore(database) if database.engine == "sqlite" else PostgresPushStore(database)
    )
    try:
        yield store, push
    finally:
        await store.close()
        await drop_test_databases()


def _hook(p: Pair, name: str = "a") -> Subscription:
    return Subscription(
        f"ps_{p.bob.user_id}_{name}", p.bob.user_id, p.b_dev.device_id, "webhook",
        f"https://hooks.example/{name}", secret="s", created_at=NOW,
    )  # fmt: skip


def _noted(p: Pair, seq: int, mentions: frozenset[str] = frozenset()) -> Noted:
    return Noted(p.cid, seq, p.alice.user_id, NOW + seq, mentions, False)


def _sent(claims: Claims) -> list[tuple[str, int, int, bool]]:
    return [(c.subscription.subscription_id, c.seq, c.count, c.mention) for c in claims.send]


async def test_noting_collapses_and_noting_again_changes_nothing(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    p = await pair(store)
    sub = await push.add_subscription(_hook(p), limit=5)
    batch = [_noted(p, seq) for seq in (1, 2, 3)]
    assert await push.note_messages(batch, DELAY, NOW) == 3
    assert await push.note_messages(batch, DELAY, NOW) == 0  # the batch handled again
    assert await push.next_due() == NOW + 1 + DELAY  # due after the first message waiting
    assert _sent(await push.claim_due(NOW + DELAY, 10)) == []  # not yet
    claims = await push.claim_due(DUE + 1, 10)
    assert _sent(claims) == [(sub.subscription_id, 3, 3, False)]
    assert claims.send[0].since == NOW + 1
    assert await push.next_due() is None
    assert _sent(await push.claim_due(DUE + 10_000, 10)) == []  # claimed once
    assert await push.note_messages(batch, DELAY, NOW) == 0  # nor noted again after the claim


async def test_the_sender_and_signed_out_devices_are_not_noted(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    p = await pair(store)
    await push.add_subscription(_hook(p), limit=5)
    own = Noted(p.cid, 1, p.bob.user_id, NOW, frozenset(), False)
    assert await push.note_messages([own], DELAY, NOW) == 0
    laptop = await make_device(store, p.bob, "laptop")
    await push.add_subscription(
        Subscription("ps_laptop", p.bob.user_id, laptop.device_id, "webhook", "https://h/l"), 5
    )
    assert await store.revoke_device(laptop.device_id)
    assert await push.note_messages([_noted(p, 2)], DELAY, NOW) == 1  # the phone only


async def test_a_muted_member_is_noted_only_when_mentioned(stores: tuple[Store, PushStore]) -> None:
    store, push = stores
    p = await pair(store)
    sub = await push.add_subscription(_hook(p), limit=5)
    await store.update_member_settings(p.cid, p.bob.user_id, muted_until=MUTED_FOR_EVER)
    assert await push.note_messages([_noted(p, 1)], DELAY, NOW) == 0
    mention = _noted(p, 2, frozenset({p.bob.user_id}))
    assert await push.note_messages([mention], DELAY, NOW) == 1
    assert _sent(await push.claim_due(DUE + 10, 10)) == [(sub.subscription_id, 2, 1, True)]
    # Muted until a time now past: noted again.
    await store.update_member_settings(p.cid, p.bob.user_id, muted_until=NOW - 1)
    assert await push.note_messages([_noted(p, 3)], DELAY, NOW) == 1


async def test_what_the_device_acknowledged_or_the_user_read_is_dropped(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    p = await pair(store)
    await push.add_subscription(_hook(p), limit=5)
    await send_many(store, p, 3)
    await push.note_messages([_noted(p, seq) for seq in (1, 2, 3)], DELAY, NOW)
    await store.advance_cursors(p.cid, p.bob.user_id, p.b_dev.device_id, 3, None)
    claims = await push.claim_due(DUE + 10, 10)
    assert (claims.send, claims.dropped) == ([], 1)
    # Read on another device: dropped as well.
    await store.append(text(p.cid, p.alice, p.a_dev, "fourth"))
    await push.note_messages([_noted(p, 4)], DELAY, NOW)
    tablet = await make_device(store, p.bob, "tablet")
    await store.advance_cursors(p.cid, p.bob.user_id, tablet.device_id, None, 4)
    claims = await push.claim_due(DUE + 10, 10)
    assert (claims.send, claims.dropped) == ([], 1)


async def test_a_failed_send_comes_back_merged_unless_superseded(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    p = await pair(store)
    sub = await push.add_subscription(_hook(p), limit=5)
    await push.note_messages([_noted(p, 1), _noted(p, 2)], DELAY, NOW)
    [first] = (await push.claim_due(DUE + 10, 10)).send
    await push.note_messages([_noted(p, 3, frozenset({p.bob.user_id}))], DELAY, NOW)
    await push.retry_later(first, DUE + 500)
    claims = await push.claim_due(DUE + 500, 10)
    assert _sent(claims) == [(sub.subscription_id, 3, 3, True)]
    assert (claims.send[0].attempts, claims.send[0].since) == (1, NOW + 1)
    # A later claim supersedes: putting the earlier one back does nothing.
    [second] = claims.send
    await push.note_messages([_noted(p, 4)], DELAY, NOW)
    [third] = (await push.claim_due(DUE + 10_000, 10)).send
    assert third.seq == 4
    await push.retry_later(second, DUE)
    assert await push.next_due() is None


async def test_concurrent_claims_never_hand_out_the_same_notification(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    alice = await make_user(store, "alice")
    others = [await make_user(store, f"member{i}") for i in range(30)]
    conv, _ = await store.create_conversation(
        GROUP, alice.user_id, [u.user_id for u in others], "crowd", NOW
    )
    for user in others:
        device = await make_device(store, user)
        await push.add_subscription(
            Subscription(f"ps_{user.user_id}", user.user_id, device.device_id, "webhook", "u"), 5
        )
    noted = Noted(conv.conversation_id, 50, alice.user_id, NOW, frozenset(), False)
    assert await push.note_messages([noted], DELAY, NOW) == 30
    results = await asyncio.gather(*(push.claim_due(DUE + 100, 7) for _ in range(6)))
    claimed = [c.subscription.subscription_id for r in results for c in r.send]
    assert len(claimed) == len(set(claimed)) == 30


async def test_subscriptions_limit_replace_and_remove(stores: tuple[Store, PushStore]) -> None:
    store, push = stores
    p = await pair(store)
    first = await push.add_subscription(_hook(p, "a"), limit=2)
    await push.add_subscription(_hook(p, "b"), limit=2)
    await expect_error(ErrorCode.CONFLICT, push.add_subscription(_hook(p, "c"), limit=2))
    again = Subscription(
        "ps_again", p.bob.user_id, p.b_dev.device_id, "webhook", first.url, created_at=NOW + 1
    )
    await push.add_subscription(again, limit=2)  # the same URL replaces, within the limit
    listed = await push.subscriptions(p.bob.user_id, None)
    assert sorted(s.subscription_id for s in listed) == sorted(
        ["ps_again", _hook(p, "b").subscription_id]
    )
    assert not await push.remove_subscription("ps_again", p.alice.user_id)  # not hers
    assert await push.remove_subscription("ps_again", p.bob.user_id)
    assert [s.subscription_id for s in await push.subscriptions(p.bob.user_id, None)] == [
        _hook(p, "b").subscription_id
    ]


async def test_previews_default_on_and_the_first_vapid_key_stays(
    stores: tuple[Store, PushStore],
) -> None:
    store, push = stores
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    users = [alice.user_id, bob.user_id]
    assert await push.without_previews(users) == set()
    await push.set_previews(alice.user_id, False)
    await push.set_previews(bob.user_id, True)
    assert await push.without_previews(users) == {alice.user_id}
    assert await push.without_previews([]) == set()
    assert await push.vapid_key("first") == "first"
    assert await push.vapid_key("second") == "first"
