"""The presence contract (tidings.core.ports.presence), run against every backend.

Time: the memory backend's clock is moved by hand; Redis really waits. So
that no assert depends on the machine being fast, every check is one of:

- "still alive": the entry was given ``LONG_S`` (far beyond any stall), or
  the check comes right after the write that gave it ``SHORT_S``;
- "gone": only after waiting ``SHORT_S + MARGIN_S``, and a wait never ends
  early, so this holds however slow the machine is.
"""

from __future__ import annotations

import pytest

from tests.presence.conftest import Harness
from tidings.core.ports.presence import LAST_SEEN_TTL_S, Presence, Typing

# Long enough never to expire during a test, even on a stalled CI machine.
LONG_S = 60.0
# Short enough to keep the Redis run quick, long enough that one local round
# trip right after a write lands well inside it.
SHORT_S = 0.6
# Added to a wait meant to outlast SHORT_S: covers millisecond rounding and
# the Redis clock ticking between TIME calls (any positive value would do).
MARGIN_S = 0.2


async def status(h: Harness, user_id: str) -> str:
    return (await h.store.get([user_id]))[user_id].status


async def last_seen(h: Harness, user_id: str) -> int:
    return (await h.store.get([user_id]))[user_id].last_seen


async def typists(h: Harness, *conversation_ids: str) -> list[tuple[str, str]]:
    return [(t.conversation_id, t.user_id) for t in await h.store.typing_in(conversation_ids)]


# -- presence ----------------------------------------------------------------


async def test_unknown_users_are_offline_and_never_seen(presence: Harness) -> None:
    assert await presence.store.get([]) == {}
    got = await presence.store.get(["u_nobody", "u_ghost"])
    assert got == {"u_nobody": Presence("offline", 0), "u_ghost": Presence("offline", 0)}


async def test_online_away_online_offline_with_several_devices(presence: Harness) -> None:
    store = presence.store
    await store.session_alive("u_a", "s_phone", LONG_S)
    await store.session_alive("u_a", "s_laptop", LONG_S)
    assert await status(presence, "u_a") == "online"

    await store.set_status("u_a", "away")
    assert await status(presence, "u_a") == "away"
    await store.set_status("u_a", "online")
    assert await status(presence, "u_a") == "online"
    await store.set_status("u_a", "away")

    # One device gone for good: the other keeps the user (and their choice).
    await store.session_gone("u_a", "s_phone", 0)
    assert await status(presence, "u_a") == "away"

    # The last device gone: still counted during the grace period ...
    await store.session_gone("u_a", "s_laptop", SHORT_S)
    assert await status(presence, "u_a") == "away"
    # ... and offline once it is over.
    await presence.wait(SHORT_S + MARGIN_S)
    assert await status(presence, "u_a") == "offline"

    # Coming back after being offline starts online: "away" lasted until then.
    await store.session_alive("u_a", "s_phone2", LONG_S)
    assert await status(presence, "u_a") == "online"


async def test_quick_reconnect_within_grace_does_not_flap(presence: Harness) -> None:
    store = presence.store
    await store.session_alive("u_a", "s_1", LONG_S)
    await store.set_status("u_a", "away")
    await store.session_gone("u_a", "s_1", LONG_S)  # the app lost its network
    await store.session_alive("u_a", "s_2", LONG_S)  # and reconnected at once
    # Never offline in between, so the user's choice holds.
    assert await status(presence, "u_a") == "away"
    await store.session_gone("u_a", "s_2", 0)
    assert await status(presence, "u_a") == "away"  # s_1's grace still runs


async def test_other_users_are_independent(presence: Harness) -> None:
    store = presence.store
    await store.session_alive("u_a", "s_1", LONG_S)
    await store.session_alive("u_b", "s_1", LONG_S)  # same session id, other user
    await store.set_status("u_b", "away")
    await store.session_gone("u_a", "s_1", 0)
    got = await store.get(["u_a", "u_b", "u_a"])
    assert set(got) == {"u_a", "u_b"}
    assert got["u_a"].status == "offline"
    assert got["u_b"].status == "away"


async def test_session_that_stops_refreshing_expires(presence: Harness) -> None:
    """A crashed node never calls session_gone: its sessions end by TTL."""
    store = presence.store
    await store.session_alive("u_a", "s_1", SHORT_S)
    assert await status(presence, "u_a") == "online"
    await presence.wait(SHORT_S + MARGIN_S)
    assert await status(presence, "u_a") == "offline"


async def test_refresh_replaces_the_expiry(presence: Harness) -> None:
    store = presence.store
    await store.session_alive("u_a", "s_1", SHORT_S)
    await store.session_alive("u_a", "s_1", LONG_S)  # a heartbeat
    await store.session_alive("u_b", "s_1", LONG_S)
    await store.session_alive("u_b", "s_1", SHORT_S)  # a later, shorter lease wins
    await presence.wait(SHORT_S + MARGIN_S)
    assert await status(presence, "u_a") == "online"
    assert await status(presence, "u_b") == "offline"


async def test_a_dead_session_is_not_revived_by_its_close(presence: Harness) -> None:
    """A node that stalled past the TTL and then closes the connection must
    not bring the user back online for a grace period."""
    store = presence.store
    await store.session_alive("u_a", "s_1", SHORT_S)
    await presence.wait(SHORT_S + MARGIN_S)
    before = await presence.now_ms()
    await store.session_gone("u_a", "s_1", LONG_S)
    got = (await store.get(["u_a"]))["u_a"]
    assert got.status == "offline"
    assert got.last_seen >= before  # the close is still news of the user


async def test_last_seen_is_the_last_contact(presence: Harness) -> None:
    store = presence.store
    assert await last_seen(presence, "u_a") == 0

    t0 = await presence.now_ms()
    await store.session_alive("u_a", "s_1", LONG_S)
    t1 = await presence.now_ms()
    first = await last_seen(presence, "u_a")
    assert t0 <= first <= t1

    await presence.wait(0.05)
    await store.session_alive("u_a", "s_1", LONG_S)  # a heartbeat moves it on
    second = await last_seen(presence, "u_a")
    assert second > first

    await presence.wait(0.05)
    t2 = await presence.now_ms()
    await store.session_gone("u_a", "s_1", SHORT_S)
    t3 = await presence.now_ms()
    left = await last_seen(presence, "u_a")
    assert t2 <= left <= t3

    # Offline after the grace period: last_seen stays the moment they left,
    # not the end of the grace period.
    await presence.wait(SHORT_S + MARGIN_S)
    assert (await store.get(["u_a"]))["u_a"] == Presence("offline", left)


async def test_last_seen_of_a_crashed_session_is_its_last_refresh(presence: Harness) -> None:
    store = presence.store
    await store.session_alive("u_a", "s_1", SHORT_S)
    refreshed = await last_seen(presence, "u_a")
    await presence.wait(SHORT_S + MARGIN_S)
    assert (await store.get(["u_a"]))["u_a"] == Presence("offline", refreshed)


async def test_batch_refresh(presence: Harness) -> None:
    store = presence.store
    await store.sessions_alive([], LONG_S)  # nothing to do, no error
    await store.sessions_alive([("u_a", "s_1"), ("u_a", "s_2"), ("u_b", "s_3")], SHORT_S)
    got = await store.get(["u_a", "u_b"])
    assert {u: p.status for u, p in got.items()} == {"u_a": "online", "u_b": "online"}

    # The node's next heartbeat round refreshes only what it still holds.
    await store.sessions_alive([("u_a", "s_2")], LONG_S)
    await presence.wait(SHORT_S + MARGIN_S)
    got = await store.get(["u_a", "u_b"])
    assert {u: p.status for u, p in got.items()} == {"u_a": "online", "u_b": "offline"}
    assert got["u_a"].last_seen > 0


async def test_large_batch(presence: Harness) -> None:
    """More sessions than one Redis pipeline chunk (a node's whole population)."""
    items = [(f"u_{i}", f"s_{i}") for i in range(1200)]
    await presence.store.sessions_alive(items, LONG_S)
    got = await presence.store.get(u for u, _ in items)
    assert len(got) == 1200
    assert {p.status for p in got.values()} == {"online"}


async def test_away_said_while_offline_does_not_outlive_the_next_connect(
    presence: Harness,
) -> None:
    store = presence.store
    await store.set_status("u_a", "away")
    assert await status(presence, "u_a") == "offline"  # no session, no presence
    await store.session_alive("u_a", "s_1", LONG_S)
    assert await status(presence, "u_a") == "online"
    await store.set_status("u_b", "online")  # nothing to undo
    assert (await store.get(["u_b"]))["u_b"] == Presence("offline", 0)


async def test_invalid_arguments_are_rejected(presence: Harness) -> None:
    store = presence.store
    with pytest.raises(ValueError, match="TTL"):
        await store.session_alive("u_a", "s_1", 0)
    with pytest.raises(ValueError, match="TTL"):
        await store.session_gone("u_a", "s_1", -1)
    with pytest.raises(ValueError, match="TTL"):
        await store.set_typing("c_1", "u_a", float("nan"))
    with pytest.raises(ValueError, match="TTL"):  # longer than the entry lives
        await store.sessions_alive([("u_a", "s_1")], LAST_SEEN_TTL_S + 1)
    with pytest.raises(ValueError, match="status"):
        await store.set_status("u_a", "busy")  # type: ignore[arg-type]


# -- typing ------------------------------------------------------------------


async def test_typing_set_and_clear(presence: Harness) -> None:
    store = presence.store
    assert await store.typing_in([]) == []
    assert await store.typing_in(["c_1"]) == []
    before = await presence.now_ms()
    await store.set_typing("c_1", "u_b", LONG_S)
    await store.set_typing("c_1", "u_a", LONG_S)
    await store.set_typing("c_2", "u_a", LONG_S)
    after = await presence.now_ms()

    got = await store.typing_in(["c_2", "c_1", "c_3", "c_2"])
    assert [(t.conversation_id, t.user_id) for t in got] == [
        ("c_2", "u_a"),
        ("c_1", "u_a"),
        ("c_1", "u_b"),
    ]
    ttl_ms = round(LONG_S * 1000)
    for t in got:
        assert before + ttl_ms <= t.expires_at_ms <= after + ttl_ms
        assert 0 < t.expires_in_ms <= ttl_ms

    await store.clear_typing("c_1", "u_a")
    await store.clear_typing("c_1", "u_a")  # idempotent
    await store.clear_typing("c_9", "u_a")  # never typed there
    assert await typists(presence, "c_1", "c_2") == [("c_1", "u_b"), ("c_2", "u_a")]


async def test_typing_expires_and_is_never_returned_stale(presence: Harness) -> None:
    store = presence.store
    await store.set_typing("c_1", "u_short", SHORT_S)
    await store.set_typing("c_1", "u_long", LONG_S)
    assert await typists(presence, "c_1") == [("c_1", "u_long"), ("c_1", "u_short")]
    await presence.wait(SHORT_S + MARGIN_S)
    got = await store.typing_in(["c_1"])
    assert [t.user_id for t in got] == ["u_long"]
    assert all(t.expires_in_ms > 0 for t in got)
    # A typist that stopped more than the TTL ago is gone for a reconnecting
    # reader, even in a conversation nobody wrote to since.
    await store.set_typing("c_2", "u_a", SHORT_S)
    await presence.wait(SHORT_S + MARGIN_S)
    assert await store.typing_in(["c_2"]) == []


async def test_typing_refresh_extends(presence: Harness) -> None:
    store = presence.store
    await store.set_typing("c_1", "u_a", SHORT_S)
    await store.set_typing("c_1", "u_a", LONG_S)  # the client's refresh
    await store.set_typing("c_1", "u_b", LONG_S)
    await store.set_typing("c_1", "u_b", SHORT_S)  # the latest word counts
    await presence.wait(SHORT_S + MARGIN_S)
    got = await store.typing_in(["c_1"])
    assert got == [got[0]]
    assert isinstance(got[0], Typing)
    assert got[0].user_id == "u_a"


async def test_typing_after_expiry_starts_again(presence: Harness) -> None:
    store = presence.store
    await store.set_typing("c_1", "u_a", SHORT_S)
    await presence.wait(SHORT_S + MARGIN_S)
    await store.set_typing("c_1", "u_b", LONG_S)  # a write prunes the stale entry
    await store.set_typing("c_1", "u_a", LONG_S)
    assert await typists(presence, "c_1") == [("c_1", "u_a"), ("c_1", "u_b")]


async def test_clear_typing_for_a_user_who_left(presence: Harness) -> None:
    store = presence.store
    for conversation_id in ("c_1", "c_2", "c_3"):
        await store.set_typing(conversation_id, "u_a", LONG_S)
    await store.set_typing("c_2", "u_b", LONG_S)
    await store.clear_typing_for("u_a", [])  # nothing to do
    await store.clear_typing_for("u_a", ["c_1", "c_2", "c_3", "c_unknown"])
    assert await typists(presence, "c_1", "c_2", "c_3") == [("c_2", "u_b")]
