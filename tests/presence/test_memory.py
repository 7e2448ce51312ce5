"""MemoryPresence beyond the shared contract: it forgets what nobody can
observe any more, so a long-running single node does not grow without end."""

from __future__ import annotations

from tests.presence.conftest import FakeClock
from tidings.core.ports.presence import LAST_SEEN_TTL_S, Presence
from tidings.presence.memory import SWEEP_INTERVAL_MS, MemoryPresence


async def test_last_seen_is_kept_for_its_ttl_then_forgotten() -> None:
    clock = FakeClock()
    store = MemoryPresence(clock)
    await store.session_alive("u_a", "s_1", 30)
    await store.session_gone("u_a", "s_1", 0)
    left = clock()
    clock.advance(LAST_SEEN_TTL_S - 1)
    assert (await store.get(["u_a"]))["u_a"] == Presence("offline", left)
    clock.advance(2)
    assert (await store.get(["u_a"]))["u_a"] == Presence("offline", 0)


async def test_sweep_drops_dead_sessions_typing_and_forgotten_users() -> None:
    clock = FakeClock()
    store = MemoryPresence(clock)
    await store.sessions_alive([(f"u_{i}", f"s_{i}") for i in range(100)], 30)
    await store.session_alive("u_keep", "s_keep", 30)
    for i in range(50):
        await store.set_typing(f"c_{i}", "u_0", 5)
    assert store.stats() == {"users": 101, "sessions": 101, "typing_conversations": 50}

    clock.advance(SWEEP_INTERVAL_MS / 1000)  # sessions and typing long dead
    await store.session_alive("u_keep", "s_keep", 30)  # a heartbeat; may sweep too
    assert store.stats() == {"users": 101, "sessions": 1, "typing_conversations": 0}

    clock.advance(LAST_SEEN_TTL_S - 60)  # u_keep keeps beating
    await store.session_alive("u_keep", "s_keep", 600)
    clock.advance(120)  # the others' last_seen has run out
    await store.get([])
    assert store.stats() == {"users": 1, "sessions": 1, "typing_conversations": 0}
    assert (await store.get(["u_keep"]))["u_keep"].status == "online"


async def test_default_clock_is_wall_time() -> None:
    import time

    store = MemoryPresence()
    before = time.time_ns() // 1_000_000
    await store.session_alive("u_a", "s_1", 30)
    after = time.time_ns() // 1_000_000
    assert before <= (await store.get(["u_a"]))["u_a"].last_seen <= after
