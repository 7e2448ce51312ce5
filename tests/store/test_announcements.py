"""Store conformance, announcements (``AnnouncementStore``): the events admin
commands leave for a node on the in-process bus. Run on every engine through
``conftest.py``'s fixtures."""

from __future__ import annotations

from tests.store.support import NOW
from tidings.core.ports.store.announcements import Announcement, AnnouncementStore


async def test_announcements_are_read_in_order_after_a_position(store: AnnouncementStore) -> None:
    assert await store.last_announcement() == 0
    assert await store.announcements_after(0, 10) == []
    await store.announce("user:u1", b"\x01disabled", NOW)
    await store.announce("user:u2", b"\x02joined", NOW + 1)
    await store.announce("user:u3", b"\x03revoked", NOW + 2)
    everything = await store.announcements_after(0, 10)
    assert [(a.topic, a.payload) for a in everything] == [
        ("user:u1", b"\x01disabled"),
        ("user:u2", b"\x02joined"),
        ("user:u3", b"\x03revoked"),
    ]
    ids = [a.id for a in everything]
    assert ids == sorted(set(ids))
    assert await store.last_announcement() == ids[-1]
    assert await store.announcements_after(ids[0], 1) == [everything[1]]
    assert await store.announcements_after(ids[-1], 10) == []


async def test_pruning_removes_only_older_announcements(store: AnnouncementStore) -> None:
    await store.announce("user:old", b"old", NOW)
    await store.announce("user:new", b"new", NOW + 10)
    assert await store.prune_announcements(NOW + 10) == 1
    left = await store.announcements_after(0, 10)
    assert [a.topic for a in left] == ["user:new"]
    assert isinstance(left[0], Announcement)
    assert await store.prune_announcements(NOW) == 0
