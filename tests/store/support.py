"""Helpers of the store conformance suite (``tests/store/test_*.py``): fixed
times, users, devices, messages and a ready pair, each typed with the narrowest
store port it needs so that a test file can declare only the aggregates it uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Protocol

import pytest

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import Conversation, ConversationKind, Device, NewMessage, User
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.composite import Store
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.messages import MessageLog

StoreOpener = Callable[[], Awaitable[Store]]
"""Opens a started store on the test's database; each call is a new handle."""

WAIT_S = 60.0
"""Upper bound for any wait in a test: far above what a healthy backend needs
even for the 2,000-conversation test on a slow CI machine, so it only turns a
hang into a failure."""

NOW = 1_700_000_000_000
GROUP = ConversationKind.GROUP
DIRECT = ConversationKind.DIRECT


class Directory(AccountStore, ConversationStore, Protocol):
    """Users and the conversations between them: what most tests set up first."""


async def make_user(store: AccountStore, name: str) -> User:
    return await store.create_user(name, f"hash-of-{name}", NOW)


async def make_device(store: AccountStore, user: User, name: str = "phone") -> Device:
    return await store.create_device(user.user_id, name, f"token-{user.user_id}-{name}", NOW)


def text(
    cid: str, sender: User, device: Device, client_msg_id: str, body: str = "hi"
) -> NewMessage:
    content = json.dumps({"text": body}).encode()
    return NewMessage(cid, sender.user_id, device.device_id, client_msg_id, content, NOW)


def event(cid: str, sender: User, device: Device, client_msg_id: str, kind: str) -> NewMessage:
    """A membership event, its kind both in the content and told to the store."""
    content = json.dumps({"kind": kind}).encode()
    return NewMessage(cid, sender.user_id, device.device_id, client_msg_id, content, NOW, kind=kind)


async def expect_error(code: ErrorCode, awaitable: Awaitable[object]) -> None:
    with pytest.raises(TidingsError) as info:
        async with asyncio.timeout(WAIT_S):
            await awaitable
    assert info.value.code is code, info.value


class Pair:
    """Alice and Bob, one device each, sharing a group (Alice admin)."""

    def __init__(self, alice: User, bob: User, a_dev: Device, b_dev: Device, conv: Conversation):
        self.alice, self.bob, self.a_dev, self.b_dev, self.conv = alice, bob, a_dev, b_dev, conv

    @property
    def cid(self) -> str:
        return self.conv.conversation_id


async def pair(store: Directory) -> Pair:
    alice = await make_user(store, "alice")
    bob = await make_user(store, "bob")
    a_dev = await make_device(store, alice)
    b_dev = await make_device(store, bob)
    conv, _ = await store.create_conversation(GROUP, alice.user_id, [bob.user_id], "team", NOW)
    return Pair(alice, bob, a_dev, b_dev, conv)


async def send_many(store: MessageLog, p: Pair, count: int, sender: User | None = None) -> None:
    who = sender or p.alice
    dev = p.a_dev if who == p.alice else p.b_dev
    for i in range(count):
        await store.append(text(p.cid, who, dev, f"{who.user_id}-seq-{i}"))


async def last_seq(store: ConversationStore, cid: str) -> int:
    conv = await store.get_conversation(cid)
    assert conv is not None
    return conv.last_seq
