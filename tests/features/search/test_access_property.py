"""A non-member never finds a message, through any filter combination, and a
member finds exactly what they may read: random conversations, memberships
(joins, leaves, rejoins, history shown from the join or in full) and
messages, checked against a model of the rules, on both engines."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.features.search.world import NOW, World, open_world
from tests.services_postgres import PostgresService

USERS = 4
CONVERSATIONS = 3
WORDS = ("apple", "berry", "cherry")


@dataclass
class Conversation:
    cid: str
    history: str
    last_seq: int = 0
    visible_after: dict[int, int] = field(default_factory=dict)
    """Member (user index) -> the seq after which they read."""
    texts: list[tuple[int, int, int, str]] = field(default_factory=list)
    """(seq, sender, ts, word) of every text."""


Step = tuple[str, int, int, int]
"""(what, conversation, user, word or nothing): "text", "add" or "remove"."""

steps = st.lists(
    st.tuples(
        st.sampled_from(["text", "text", "add", "remove"]),
        st.integers(0, CONVERSATIONS - 1),
        st.integers(0, USERS - 1),
        st.integers(0, len(WORDS) - 1),
    ),
    min_size=4,
    max_size=24,
)
scenarios = st.tuples(
    st.lists(st.sampled_from(["joined", "full"]), min_size=CONVERSATIONS, max_size=CONVERSATIONS),
    st.lists(
        st.sets(st.integers(1, USERS - 1), max_size=USERS - 1),
        min_size=CONVERSATIONS,
        max_size=CONVERSATIONS,
    ),
    steps,
)


async def _play(world: World, scenario: tuple[list[str], list[set[int]], list[Step]]) -> None:
    histories, initial, plan = scenario
    users = [await world.user() for _ in range(USERS)]
    convs: list[Conversation] = []
    for history, members in zip(histories, initial, strict=True):
        cid = await world.conversation(
            users[0], [users[m] for m in sorted(members)], "group", history
        )
        convs.append(Conversation(cid, history, 0, dict.fromkeys({0, *members}, 0)))
    clock = itertools.count()
    for what, c, u, w in plan:
        conv = convs[c]
        if what == "text" and u in conv.visible_after:
            ts = NOW + next(clock) * 1000
            conv.last_seq = await world.text(conv.cid, users[u], f"{WORDS[w]} pie", ts)
            conv.texts.append((conv.last_seq, u, ts, WORDS[w]))
        elif what == "add" and u not in conv.visible_after and conv.visible_after:
            by = min(conv.visible_after)
            await world.add(conv.cid, users[by], [users[u]])
            conv.visible_after[u] = conv.last_seq if conv.history == "joined" else 0
            conv.last_seq += 1
        elif what == "remove" and u in conv.visible_after and len(conv.visible_after) > 1:
            by = min(m for m in conv.visible_after if m != u)
            await world.remove(conv.cid, users[by], [users[u]])
            del conv.visible_after[u]
            conv.last_seq += 1
    await world.index_all()
    middle = NOW + 6 * 1000
    for u, user in enumerate(users):
        for word in WORDS:
            filters: list[dict[str, Any]] = [
                {},
                {"after": str(middle)},
                {"before": str(middle)},
                *({"conversation_id": conv.cid} for conv in convs),
                *({"sender_id": other} for other in users),
            ]
            for f in filters:
                expected = {
                    (conv.cid, seq)
                    for conv in convs
                    if u in conv.visible_after
                    for seq, sender, ts, said in conv.texts
                    if said == word
                    and seq > conv.visible_after[u]
                    and f.get("conversation_id", conv.cid) == conv.cid
                    and f.get("sender_id", users[sender]) == users[sender]
                    and ts >= int(f.get("after", 0))
                    and ts < int(f.get("before", 2**62))
                }
                assert await world.found(user, word, **f) == expected, (u, word, f)
                assert await world.scanned(user, word, **f) == expected, (u, word, f)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_only_what_a_member_may_read_is_ever_found(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service: PostgresService | None = (
        request.getfixturevalue("postgres_service") if backend == "postgres" else None
    )
    runs = itertools.count()

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(scenario=scenarios)
    def check(scenario: tuple[list[str], list[set[int]], list[Step]]) -> None:
        async def run() -> None:
            url = None if service is None else await service.create_database()
            try:
                async for world in open_world(tmp_path / f"run{next(runs)}", url):
                    await _play(world, scenario)
            finally:
                if service is not None:
                    await service.drop_pending()

        asyncio.run(run())

    check()
