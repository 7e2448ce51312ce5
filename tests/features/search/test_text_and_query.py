"""Folding, snippets, the query syntax and cursors, without an engine."""

from __future__ import annotations

import pytest

from tidings.core.errors import TidingsError
from tidings.features.search.query import Cursor, decode_cursor, encode_cursor, parse
from tidings.features.search.text import fold, snippet


def test_fold_drops_accents_and_case_and_pairs_cjk_runs() -> None:
    assert fold("Crème Brûlée") == "creme brulee"
    assert fold("東京都").split() == ["東京", "京都"]
    assert fold("한국어").split() == ["한국", "국어"]
    assert fold("ﬁne") == "fine"
    assert fold("日").split() == ["日"]


def test_snippets_escape_mark_and_cut_around_the_first_hit() -> None:
    assert (
        snippet("<i>Café</i> & tea", ["cafe"]) == "&lt;i&gt;<mark>Café</mark>&lt;/i&gt; &amp; tea"
    )
    assert snippet("we are running now", ["runs"]) == "we are <mark>running</mark> now"
    assert snippet("明日東京都庁で", ["東京", "京都"]) == "明日<mark>東京都</mark>庁で"
    long = " ".join(f"w{i}" for i in range(100)) + " needle " + " ".join("x" * 5 for _ in range(50))
    cut = snippet(long, ["needle"])
    assert cut.startswith("…w")
    assert cut.endswith("…")
    assert "<mark>needle</mark>" in cut
    assert len(cut.split()) < 30
    assert snippet("no hit here", ["absent"]) == "no hit here"


def test_the_query_syntax() -> None:
    q = parse('budget "Q3 plan" -draft -"old plan" from:u_1 in:c_1 after:2026-12-01')
    assert q.terms == ("budget", "Q3 plan")
    assert q.excluded == ("draft", "old plan")
    assert (q.sender_id, q.conversation_id) == ("u_1", "c_1")
    assert q.after == 1_796_083_200_000
    assert q.before is None
    both = parse("x before:2026-12-02T12:00:00+01:00", before="1796300000000")
    assert both.before == 1_796_209_200_000  # the earlier of the two
    assert parse("x", after="5").after == 5
    assert parse("x !!! y").terms == ("x", "y")
    assert parse('say "hi"there').terms == ("say", "hi", "there")


@pytest.mark.parametrize(
    ("q", "params", "message"),
    [
        ('"open', {}, "unclosed"),
        ("from:u_1", {}, "at least one word"),
        ("-only", {}, "at least one word"),
        ("x from:", {}, "needs a value"),
        ("x -from:u_1", {}, "needs a value"),
        ("x before:tomorrow", {}, "not a date"),
        ("x", {"after": "1234567890123456"}, "out of range"),
        ("x in:c_1", {"conversation_id": "c_2"}, "given twice"),
        ("x from:u_1", {"sender_id": "u_2"}, "given twice"),
        (" ".join(f"w{i}" for i in range(17)), {}, "more than 16"),
    ],
)
def test_malformed_queries_are_bad_requests(q: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(TidingsError) as caught:
        parse(q, **params)
    assert caught.value.code.value == "bad_request"
    assert message in str(caught.value)


def test_cursors_round_trip_and_belong_to_their_query() -> None:
    query = parse("budget")
    cursor = Cursor("index", query.fingerprint(), -3.25, "c_1", 7)
    assert decode_cursor(encode_cursor(cursor), query) == cursor
    for text in [
        "",
        "%%%",
        "bm90IGpzb24",
        encode_cursor(Cursor("x", query.fingerprint(), 0, "c", 1)),
    ]:
        with pytest.raises(TidingsError, match=r"not a cursor|another query"):
            decode_cursor(text, query)
    with pytest.raises(TidingsError, match="another query"):
        decode_cursor(encode_cursor(cursor), parse("budgets"))
