"""The search call's query: its syntax, its filters and its cursor.

``q`` holds words, ``"quoted phrases"``, ``-excluded`` words or phrases, and
the filters ``from:<user_id>``, ``in:<conversation_id>``,
``before:<date>`` and ``after:<date>`` (docs/protocol.md, "Search"). It is
parsed here once, into a :class:`Query` that every engine compiles to its
own syntax, so that a query means the same on SQLite and on PostgreSQL and a
malformed one is refused (``bad_request``) before any engine sees it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import zlib
from dataclasses import dataclass

import msgspec

from tidings.core.errors import ErrorCode, TidingsError
from tidings.features.search.text import fold

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
"""Words and phrases in one query at most: each is one more index lookup."""
_TOKEN = re.compile(r'(-?)(?:(\w+):)?(?:"([^"]*)"|(\S*))')
_FILTERS = ("from", "in", "before", "after")
_WORDY = re.compile(r"[^\W_]")


def bad(message: str) -> TidingsError:
    return TidingsError(ErrorCode.BAD_REQUEST, message)


@dataclass(frozen=True)
class Query:
    """A parsed search: what must match and which messages to look among.

    ``terms`` and ``excluded`` are as typed (an engine folds them as it folds
    what it indexes, ``text.fold``); each is matched as a phrase (a single
    word is a phrase of one). ``after`` is inclusive and
    ``before`` exclusive, in ms since the epoch.
    """

    terms: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    conversation_id: str | None = None
    sender_id: str | None = None
    after: int | None = None
    before: int | None = None

    def words(self) -> list[str]:
        """The folded words a snippet marks."""
        return [word for term in self.terms for word in fold(term).split()]

    def fingerprint(self) -> int:
        """Ties a cursor to the query it pages (a cursor of another query is refused)."""
        return zlib.crc32(repr(self).encode())


def parse_time(value: str, name: str) -> int:
    """``value`` as ms since the epoch: digits are ms, else an ISO 8601 date
    (``2026-12-01``, midnight UTC) or date and time (UTC unless it says)."""
    if value.isascii() and value.isdigit():
        if len(value) > 15:
            raise bad(f"{name}: {value!r} is out of range")
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise bad(
            f"{name}: {value!r} is not a date (2026-12-01), an ISO 8601 time or ms since the epoch"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _one(current: str | None, value: str, name: str) -> str:
    if current is not None and current != value:
        raise bad(f"{name} is given twice with different values")
    return value


def parse(
    q: str,
    conversation_id: str | None = None,
    sender_id: str | None = None,
    after: str | None = None,
    before: str | None = None,
) -> Query:
    """The query ``q`` (at most :data:`MAX_QUERY_CHARS`, which the route's
    parameters enforce) with the call's own filters; ``bad_request`` if malformed."""
    if q.count('"') % 2:
        raise bad('q has an unclosed "')
    terms: list[str] = []
    excluded: list[str] = []
    limits = {
        "after": None if after is None else parse_time(after, "after"),
        "before": None if before is None else parse_time(before, "before"),
    }
    for match in _TOKEN.finditer(q):
        minus, field, phrase, word = match.groups()
        value = phrase if phrase is not None else word
        if field in _FILTERS:
            if minus or not value:
                raise bad(f"{field}: needs a value (and cannot be excluded)")
            if field == "from":
                sender_id = _one(sender_id, value, "the sender")
            elif field == "in":
                conversation_id = _one(conversation_id, value, "the conversation")
            else:
                moment = parse_time(value, f"{field}:")
                old = limits[field]
                pick = max if field == "after" else min
                limits[field] = moment if old is None else pick(old, moment)
            continue
        typed = match.group()[len(minus) :] if phrase is None else phrase
        text = " ".join(typed.replace('"', " ").split())
        if not _WORDY.search(fold(text)):
            continue  # punctuation alone: no engine indexes it
        (excluded if minus else terms).append(text)
    if not terms:
        raise bad("q needs at least one word or phrase to find")
    if len(terms) + len(excluded) > MAX_TERMS:
        raise bad(f"q has more than {MAX_TERMS} words and phrases")
    return Query(
        tuple(terms),
        tuple(excluded),
        conversation_id,
        sender_id,
        limits["after"],
        limits["before"],
    )


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page starts: after the hit with this sort key, on the same
    path (``source``: "index" or "store") and for the same query."""

    source: str
    fingerprint: int
    score: float
    conversation_id: str
    seq: int


_cursor_decoder = msgspec.json.Decoder(Cursor)


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str, query: Query) -> Cursor:
    """The cursor ``text`` of ``query``; ``bad_request`` if it is not one."""
    try:
        cursor = _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad("cursor is not a cursor this server gave") from None
    if cursor.fingerprint != query.fingerprint() or cursor.source not in ("index", "store"):
        raise bad("cursor belongs to another query")
    return cursor
