"""The search port's conformance suite: both engines (SQLite FTS5 files,
PostgreSQL tsvector) give the same answers to the same store.

Each test writes with the store's own calls and brings the index up to date
through the keeper (the indexer's code), so what is checked is the engine
as the feature drives it: matching, folding, access inside the query,
edits, deletes, retention, pages and generations.
"""

from __future__ import annotations

import pytest

from tests.features.search.world import DAY_MS, NOW, World
from tidings.features.search.port import GenerationGone, Put, Search
from tidings.features.search.query import Cursor, parse


async def test_words_match_by_stem_accent_and_case_not_by_accident(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    running = await world.text(cid, a, "She was Running late to the Crème Brûlée tasting")
    other = await world.text(cid, b, "nothing to see here")
    assert await world.found(b, "runs") == {(cid, running)}
    assert await world.found(b, "creme brulee") == {(cid, running)}
    assert await world.found(b, "CRÈME") == {(cid, running)}
    assert await world.found(b, "tasting nothing") == set()
    assert await world.found(b, "see") == {(cid, other)}


async def test_cjk_without_spaces_and_hangul_are_found_by_their_words(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    tokyo = await world.text(cid, a, "明日東京都庁で会いましょう")
    korean = await world.text(cid, a, "한국어를 배우고 있어요")
    await world.text(cid, a, "京都に行きました")
    assert await world.found(b, "東京") == {(cid, tokyo)}
    assert await world.found(b, "都庁") == {(cid, tokyo)}
    assert await world.found(b, "会いましょう") == {(cid, tokyo)}
    assert await world.found(b, "한국어") == {(cid, korean)}
    assert await world.found(b, "大阪") == set()


async def test_phrases_and_exclusions(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    first = await world.text(cid, a, "the blue whale swims")
    second = await world.text(cid, a, "the whale is blue")
    assert await world.found(b, '"blue whale"') == {(cid, first)}
    assert await world.found(b, "blue whale") == {(cid, first), (cid, second)}
    assert await world.found(b, "whale -swims") == {(cid, second)}
    assert await world.found(b, 'whale -"is blue"') == {(cid, first)}


async def test_filters_conversation_sender_and_dates(world: World) -> None:
    a, b = await world.user(), await world.user()
    one = await world.conversation(a, [b])
    two = await world.conversation(b, [a])
    old = await world.text(one, a, "budget review", ts=NOW - 10 * DAY_MS)
    new = await world.text(one, b, "budget approved", ts=NOW)
    elsewhere = await world.text(two, a, "budget elsewhere", ts=NOW)
    assert await world.found(a, "budget") == {(one, old), (one, new), (two, elsewhere)}
    assert await world.found(a, "budget", conversation_id=one) == {(one, old), (one, new)}
    assert await world.found(a, f"budget in:{two}") == {(two, elsewhere)}
    assert await world.found(a, f"budget from:{a}") == {(one, old), (two, elsewhere)}
    assert await world.found(a, "budget", sender_id=b) == {(one, new)}
    assert await world.found(a, "budget", before=str(NOW - DAY_MS)) == {(one, old)}
    assert await world.found(a, "budget after:2026-01-01", after=str(NOW - DAY_MS)) == {
        (one, new),
        (two, elsewhere),
    }


async def test_only_members_find_and_only_the_history_they_may_read(world: World) -> None:
    owner, early, late, full_late, outsider = [await world.user() for _ in range(5)]
    joined = await world.conversation(owner, [early])
    before = await world.text(joined, owner, "secret plan alpha")
    await world.add(joined, owner, [late])
    after = await world.text(joined, owner, "secret plan beta")
    full = await world.conversation(owner, [], history="full")
    old_full = await world.text(full, owner, "secret plan gamma")
    await world.add(full, owner, [full_late])
    assert await world.found(early, "secret") == {(joined, before), (joined, after)}
    assert await world.found(late, "secret") == {(joined, after)}
    assert await world.found(late, "secret", conversation_id=joined) == {(joined, after)}
    assert await world.found(full_late, "secret") == {(full, old_full)}
    assert await world.found(outsider, "secret") == set()
    assert await world.found(outsider, "secret", conversation_id=joined) == set()
    await world.remove(joined, owner, [early])
    assert await world.found(early, "secret") == set()
    # The store's slower path applies the same rules.
    assert await world.scanned(late, "secret") == {(joined, after)}
    assert await world.scanned(outsider, "secret") == set()
    assert await world.scanned(full_late, "secret") == {(full, old_full)}


async def test_edits_replace_the_text_at_the_seq_and_deletes_remove_it(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    seq = await world.text(cid, a, "meet at noon")
    await world.send(cid, a, {"kind": "edit", "target": seq, "text": "meet at dusk"})
    assert await world.found(b, "dusk") == {(cid, seq)}
    assert await world.found(b, "noon") == set()
    [hit] = await world.find(b, "dusk")
    assert hit.text == "meet at dusk"
    await world.send(cid, a, {"kind": "reaction", "target": seq, "emoji": "👍", "on": True})
    assert await world.found(b, "dusk") == {(cid, seq)}
    await world.send(cid, b, {"kind": "delete", "target": seq})
    assert await world.found(b, "dusk") == set()
    assert await world.found(b, "meet") == set()
    # A rebuild reads the scrubbed entries (the edit keeps its kind, not its text).
    await world.keeper.rebuild()
    assert await world.found(b, "meet") == set()


async def test_a_rebuild_from_the_store_gives_the_same_answers(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    kept = await world.text(cid, a, "alpha one")
    gone = await world.text(cid, a, "alpha two")
    edited = await world.text(cid, a, "alpha three")
    await world.send(cid, a, {"kind": "edit", "target": edited, "text": "alpha four"})
    await world.send(cid, a, {"kind": "delete", "target": gone})
    before = await world.found(b, "alpha")
    old = world.generation
    rebuilt = await world.keeper.rebuild()
    assert old is not None
    assert rebuilt.name != old.name
    assert await world.index.live() == rebuilt
    assert before == await world.found(b, "alpha") == {(cid, kept), (cid, edited)}
    with pytest.raises(GenerationGone):
        await world.index.apply(old, [Put(cid, 99, a, NOW, "x")], rebuilt.position + 1)


async def test_replayed_changes_change_nothing(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    seq = await world.text(cid, a, "original words")
    await world.send(cid, a, {"kind": "edit", "target": seq, "text": "edited words"})
    generation = await world.index_all()
    # At least once: the whole stream handed to the indexer again, twice.
    batch = await world.store.changes_after(0, 100)
    await world.keeper.follow(batch)
    await world.keeper.follow(batch)
    assert await world.index.live() == generation
    assert await world.found(b, "edited") == {(cid, seq)}
    assert await world.found(b, "original") == set()


async def test_retention_and_the_window_are_followed(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    old = await world.text(cid, a, "ancient news", ts=NOW - 40 * DAY_MS)
    new = await world.text(cid, a, "recent news", ts=NOW)
    assert await world.found(b, "news") == {(cid, old), (cid, new)}
    await world.store.update_conversation(cid, retention_days=30)
    purge = await world.store.purge_expired(NOW, 0, 1000)
    assert purge.entries >= 1
    # Hidden at once by the query (purged_seq), dropped by the sweep.
    assert await world.found(b, "news") == {(cid, new)}
    generation = await world.index_all()
    assert await world.index.expire(generation, 0) == 1
    assert await world.index.expire(generation, NOW + 1) == 1
    assert await world.found(b, "news") == set()


async def test_pages_are_disjoint_ordered_and_complete(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    seqs = [await world.text(cid, a, f"report number {i}", ts=NOW + i * DAY_MS) for i in range(7)]
    query = parse("report")
    seen: list[int] = []
    cursor: Cursor | None = None
    generation = await world.index_all()
    for _ in range(10):
        page = await world.index.search(generation, Search(b, query, 3, cursor))
        seen += [hit.seq for hit in page]
        if len(page) < 3:
            break
        last = page[-1]
        cursor = Cursor("index", query.fingerprint(), last.score, last.conversation_id, last.seq)
    # Equally relevant: the newest first.
    assert seen == list(reversed(seqs))


async def test_the_store_path_pages_newest_first(world: World) -> None:
    a, b = await world.user(), await world.user()
    cid = await world.conversation(a, [b])
    seqs = [await world.text(cid, a, f"Memo {i}", ts=NOW + i) for i in range(5)]
    query = parse("memo")
    first = await world.index.scan(Search(b, query, 2))
    last = first[-1]
    cursor = Cursor("store", query.fingerprint(), last.score, last.conversation_id, last.seq)
    rest = await world.index.scan(Search(b, query, 10, cursor))
    assert [h.seq for h in first + rest] == list(reversed(seqs))


async def test_generations_start_empty_and_a_discarded_one_is_gone(world: World) -> None:
    assert await world.index.live() is None
    spare = await world.index.create()
    assert spare.position == 0
    await world.index.discard(spare)
    with pytest.raises(GenerationGone):
        await world.index.apply(spare, [], 1)
    built = await world.index_all()
    await world.index.check(built)
    assert await world.index.live() == built


async def test_a_member_of_very_many_conversations_is_searched_without_narrowing(
    world: World, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTS5 names the searcher's conversations in its MATCH up to a bound;
    past it the query is not narrowed, and access is still the join's."""
    if backend == "sqlite":
        from tidings.features.search import sqlite

        monkeypatch.setattr(sqlite, "MAX_SCOPED", 1)
    a, b, c = await world.user(), await world.user(), await world.user()
    one = await world.conversation(a, [b])
    two = await world.conversation(a, [b])
    away = await world.conversation(c, [])
    seqs = {
        (cid, await world.text(cid, a if cid != away else c, "scope test"))
        for cid in (one, two, away)
    }
    assert await world.found(b, "scope") == seqs - {(away, 1)}
    assert await world.found(b, "scope", conversation_id=two) == {(two, 1)}
