"""Store conformance, accounts (``AccountStore``): users, credentials, devices,
tokens, disabling and resets. Run on every engine through ``conftest.py``'s
fixtures; every wait is bounded by ``WAIT_S``."""

from __future__ import annotations

import asyncio

from tests.store.support import (
    NOW,
    WAIT_S,
    expect_error,
    make_device,
    make_user,
)
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.store.accounts import AccountStore

Subject = AccountStore


# -- accounts ---------------------------------------------------------------------
async def test_create_and_get_user(store: Subject) -> None:
    alice = await make_user(store, "Alice")
    assert alice.username == "Alice"
    assert alice.created_at == NOW
    assert await store.get_user(alice.user_id) == alice
    assert await store.get_user("u_unknown") is None


async def test_username_conflict_is_case_insensitive(store: Subject) -> None:
    alice = await make_user(store, "Alice")
    await expect_error(ErrorCode.CONFLICT, store.create_user("alice", "x", NOW))
    await expect_error(ErrorCode.CONFLICT, store.create_user("ALICE", "x", NOW))
    creds = await store.get_credentials("aLiCe")
    assert creds is not None
    assert creds.user == alice
    assert creds.password_hash == "hash-of-Alice"
    assert await store.get_credentials("nobody") is None


async def test_devices_tokens_and_revocation(store: Subject) -> None:
    alice = await make_user(store, "alice")
    phone = await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    laptop = await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    assert phone.device_id != laptop.device_id
    assert (phone.user_id, phone.name, phone.created_at) == (alice.user_id, "phone", NOW)
    assert await store.device_for_token("hash-1") == phone
    assert await store.device_for_token("hash-2") == laptop
    assert await store.device_for_token("hash-3") is None
    assert await store.revoke_device(phone.device_id) is True
    assert await store.device_for_token("hash-1") is None
    assert await store.device_for_token("hash-2") == laptop
    assert await store.revoke_device(phone.device_id) is False
    assert await store.revoke_device("d_unknown") is False


async def test_device_of_unknown_user_is_not_found(store: Subject) -> None:
    await expect_error(ErrorCode.NOT_FOUND, store.create_device("u_unknown", "x", "h", NOW))
    assert await store.device_for_token("h") is None


async def test_accounts_are_listed_in_case_insensitive_name_order_by_page(store: Subject) -> None:
    names = ["bob", "Alice", "a_b", "a.b", "A-c", "zed"]
    users = {name: await make_user(store, name) for name in names}
    await make_device(store, users["bob"], "phone")
    await make_device(store, users["bob"], "laptop")
    first = await store.list_accounts(limit=4)
    rest = await store.list_accounts(first[-1].user.username, limit=4)
    order = [a.user.username for a in [*first, *rest]]
    assert order == sorted(names, key=str.lower)
    assert len(first) == 4
    accounts = {a.user.username: a for a in [*first, *rest]}
    assert accounts["bob"].live_devices == 2
    assert accounts["zed"].live_devices == 0
    assert accounts["bob"].user == users["bob"]
    assert all(a.disabled_at is None for a in accounts.values())
    assert await store.list_accounts("zed") == []


async def test_disabling_revokes_tokens_and_refuses_new_devices(store: Subject) -> None:
    alice = await make_user(store, "alice")
    await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    assert await store.set_disabled(alice.user_id, True, NOW + 1) is True
    assert await store.set_disabled(alice.user_id, True, NOW + 2) is False
    assert await store.device_for_token("hash-1") is None
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.disabled is True
    await expect_error(
        ErrorCode.FORBIDDEN, store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    )
    assert await store.device_for_token("hash-2") is None
    [account] = await store.list_accounts()
    assert (account.disabled_at, account.live_devices) == (NOW + 1, 0)

    assert await store.set_disabled(alice.user_id, False, NOW + 3) is True
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.disabled is False
    await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    assert await store.device_for_token("hash-2") is not None
    assert await store.device_for_token("hash-1") is None  # re-enabling revives no token
    await expect_error(ErrorCode.NOT_FOUND, store.set_disabled("u_unknown", True, NOW))


async def test_password_reset_revokes_every_token(store: Subject) -> None:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    await store.create_device(alice.user_id, "phone", "hash-1", NOW)
    await store.create_device(alice.user_id, "laptop", "hash-2", NOW)
    await store.create_device(bob.user_id, "phone", "hash-3", NOW)
    assert await store.set_password_hash(alice.user_id, "new-hash", NOW + 1) == 2
    creds = await store.get_credentials("alice")
    assert creds is not None
    assert creds.password_hash == "new-hash"
    assert await store.device_for_token("hash-1") is None
    assert await store.device_for_token("hash-2") is None
    assert await store.device_for_token("hash-3") is not None
    assert await store.set_password_hash(alice.user_id, "newer-hash", NOW + 2) == 0
    await expect_error(ErrorCode.NOT_FOUND, store.set_password_hash("u_unknown", "h", NOW))


async def test_a_login_racing_a_disable_leaves_no_live_token(store: Subject) -> None:
    alice = await make_user(store, "alice")
    hashes = [f"race-{i}" for i in range(20)]
    refusals: list[ErrorCode] = []

    async def login(token_hash: str) -> None:
        try:
            await store.create_device(alice.user_id, "phone", token_hash, NOW)
        except TidingsError as exc:
            refusals.append(exc.code)

    await asyncio.wait_for(
        asyncio.gather(
            *(login(h) for h in hashes[:10]),
            store.set_disabled(alice.user_id, True, NOW),
            *(login(h) for h in hashes[10:]),
        ),
        WAIT_S,
    )
    assert set(refusals) <= {ErrorCode.FORBIDDEN}
    for token_hash in hashes:
        assert await store.device_for_token(token_hash) is None
