"""The SQL of a search, shared by both engines.

Both engines answer a page with the same statement shape: the candidate
rows joined to the caller's membership and the conversation (``seq`` above
``visible_after`` and ``purged_seq``), the call's filters, and a keyset on
``(score, conversation_id, seq)`` for the cursor. Only the pieces an engine
spells its own way (placeholders, the full-text match and its score, how a
stored content's text is read) come from its :class:`Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidings.features.search.port import Search

RECENCY_MS = 30 * 86_400_000
"""A message this much newer outranks one that matches one unit better."""


@dataclass(frozen=True)
class Dialect:
    placeholder: Callable[[int], str]
    """The n-th (1-based) parameter: ``?`` or ``$n``."""
    like: str
    """Case-insensitive (at least for ASCII) substring match: LIKE or ILIKE."""
    members: str
    conversations: str
    messages: str
    text_of: str
    """The text of a stored content ``e.content``."""
    kind_of: str
    """The kind of a stored content ``e.content`` ('text' when it names none)."""


class Statement:
    """SQL text with its arguments, collected as the text is written."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.args: list[Any] = []
        self.text = ""

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return self.dialect.placeholder(len(self.args))


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters(st: Statement, search: Search) -> str:
    query = search.query
    conds = [""]
    if query.conversation_id is not None:
        conds.append(f"e.conversation_id = {st.arg(query.conversation_id)}")
    if query.sender_id is not None:
        conds.append(f"e.sender_id = {st.arg(query.sender_id)}")
    if query.after is not None:
        conds.append(f"e.ts >= {st.arg(query.after)}")
    if query.before is not None:
        conds.append(f"e.ts < {st.arg(query.before)}")
    return " AND ".join(conds)


def _page(st: Statement, search: Search, inner: str, extra: list[str]) -> str:
    conds = list(extra)
    cursor = search.after
    if cursor is not None:
        score = st.arg(cursor.score)
        conds.append(
            f"(score > {score} OR (score = {st.arg(cursor.score)}"
            f" AND (conversation_id, seq) > ({st.arg(cursor.conversation_id)},"
            f" {st.arg(cursor.seq)})))"
        )
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return (
        f"SELECT conversation_id, seq, sender_id, ts, text, score FROM ({inner}) AS hits{where}"
        f" ORDER BY score, conversation_id, seq LIMIT {st.arg(search.limit)}"
    )


def index_page(
    dialect: Dialect,
    search: Search,
    entries: str,
    match: Callable[[Statement], str],
    score: Callable[[Statement], str],
) -> Statement:
    """A page from the index: ``entries`` (aliased ``e``, with whatever the
    engine's match needs) matching ``match``, ranked by ``score``."""
    st = Statement(dialect)
    inner = (
        f"SELECT e.conversation_id, e.seq, e.sender_id, e.ts, e.text, {score(st)} AS score"
        f" FROM {entries}"
        f" JOIN {dialect.members} m ON m.conversation_id = e.conversation_id"
        f" AND m.user_id = {st.arg(search.user_id)}"
        f" JOIN {dialect.conversations} c ON c.conversation_id = e.conversation_id"
        f" WHERE {match(st)} AND e.seq > m.visible_after AND e.seq > c.purged_seq"
        f"{_filters(st, search)}"
    )
    st.text = _page(st, search, inner, [])
    return st


def store_page(dialect: Dialect, search: Search) -> Statement:
    """A page from the store's own messages (the slower path): texts as sent,
    newest first, each query word a case-insensitive substring."""
    st = Statement(dialect)
    inner = (
        f"SELECT e.conversation_id, e.seq, e.sender_id, e.ts, {dialect.text_of} AS text,"
        " CAST(-e.ts AS DOUBLE PRECISION) AS score"
        f" FROM {dialect.members} m"
        f" JOIN {dialect.conversations} c ON c.conversation_id = m.conversation_id"
        f" JOIN {dialect.messages} e ON e.conversation_id = m.conversation_id"
        " AND e.seq > m.visible_after AND e.seq > c.purged_seq"
        f" WHERE m.user_id = {st.arg(search.user_id)} AND {dialect.kind_of} = 'text'"
        f"{_filters(st, search)}"
    )
    like = dialect.like
    words = [f"text {like} {st.arg(_like_pattern(t))} ESCAPE '\\'" for t in search.query.terms]
    words += [
        f"text NOT {like} {st.arg(_like_pattern(t))} ESCAPE '\\'" for t in search.query.excluded
    ]
    st.text = _page(st, search, inner, words)
    return st
