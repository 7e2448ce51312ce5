"""What search makes of a text, the same on every engine.

Both engines index the *folded* text (:func:`fold`): lower case, accents
removed (``café`` is found by ``cafe``), and every run of CJK characters,
which has no spaces between words, written as its overlapping character
pairs (``東京都`` as ``東京 京都``), so that a word of two characters or more
is found anywhere inside the run. The engines then stem English words
(FTS5's ``porter``, PostgreSQL's snowball ``english``). Folding in Python
rather than in each engine (``unaccent``, the ``trigram`` tokenizer) makes
both engines see the same tokens, so one conformance suite holds for both.

Snippets are cut from the original text by :func:`snippet`, also here, so
that what is marked does not depend on the engine either.
"""

from __future__ import annotations

import html
import re
import unicodedata

_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f"
)
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(rf"[{_CJK}]+|[^\W_]+(?:['\u2019][^\W_]+)*")
"""A word of the original text: a CJK run, or letters and digits (with inner apostrophes)."""
_SUFFIXES = ("ing", "ed", "es", "s", "ly")
SNIPPET_WORDS = 24
"""Words of context a snippet shows around its first hit at most."""


def strip_accents(text: str) -> str:
    """``text`` lower-cased without combining marks (NFKD, so ``ﬁ`` is ``fi``
    too), then recomposed (NFC), so that Hangul syllables stay syllables."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare)


def _pairs(run: str) -> str:
    if len(run) == 1:
        return run
    return " ".join(run[i : i + 2] for i in range(len(run) - 1))


def fold(text: str) -> str:
    """The text as both engines index it (and as query words are matched)."""
    return _CJK_RUN.sub(lambda m: f" {_pairs(m.group())} ", strip_accents(text))


def _stem(word: str) -> str:
    """A rough English stem, only to decide which words of a snippet to mark
    (the engines' own stemmers decide what matches)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            # running -> runn -> run, as runs -> run
            return stem[:-1] if stem[-1] == stem[-2] and stem[-1] not in "aeiouls" else stem
    return word


def _marked(word: str, terms: list[str], stems: set[str]) -> list[tuple[int, int]]:
    """Where to put ``<mark>`` in one word of the text: the whole word if it is
    a query word (by its rough stem), or each query pair inside a CJK run.
    Where folding kept the run's length, offsets in it are offsets in ``word``;
    otherwise (half-width kana) the whole run is marked."""
    folded = strip_accents(word)
    if _CJK_RUN.fullmatch(word):
        if len(folded) != len(word):
            return [(0, len(word))] if any(term in folded for term in terms) else []
        spans = []
        for term in terms:
            if _CJK_RUN.fullmatch(term):
                spans += [
                    (m.start(), m.start() + len(term)) for m in re.finditer(re.escape(term), folded)
                ]
        return _merged(spans)
    return [(0, len(word))] if _stem(folded) in stems else []


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def snippet(text: str, terms: list[str]) -> str:
    """``text`` HTML-escaped, cut to a window of :data:`SNIPPET_WORDS` words
    around its first hit, with the words matching ``terms`` (folded query
    words) in ``<mark>``."""
    stems = {_stem(term) for term in terms}
    words = list(_WORD.finditer(text))
    spans = [_marked(w.group(), terms, stems) for w in words]
    first = next((i for i, s in enumerate(spans) if s), 0)
    first_word = max(0, first - SNIPPET_WORDS // 3)
    last_word = min(len(words), first_word + SNIPPET_WORDS)
    start = words[first_word].start() if first_word > 0 else 0
    end = words[last_word - 1].end() if last_word < len(words) else len(text)
    out: list[str] = ["…"] if start > 0 else []
    cursor = start
    for i in range(first_word, last_word):
        base = words[i].start()
        for span_start, span_end in spans[i]:
            out.append(html.escape(text[cursor : base + span_start]))
            out.append(f"<mark>{html.escape(text[base + span_start : base + span_end])}</mark>")
            cursor = base + span_end
    out.append(html.escape(text[cursor:end]))
    if end < len(text):
        out.append("…")
    return "".join(out)
