"""``tidings bench search``: the search engines measured on one generated corpus.

A corpus of ``--messages`` texts (words drawn from a vocabulary of
``--vocabulary`` words with Zipf-distributed frequencies, 4 to 16 words a
message) over ``--conversations`` groups of 2 to 8 of ``--users`` users is
written into a real store (SQLite, or a fresh PostgreSQL database with
``--store postgres``) with the store's own appends. Then, per engine:

- ``indexing_msgs_per_s``: the index built from the change log by the
  feature's own rebuild (``features/search/keeper.py``), folding included;
- ``index_mib``: the index's size on disk (SQLite: its files; PostgreSQL:
  ``search_entries`` with its indexes and TOAST);
- ``p50_ms`` / ``p99_ms`` of ``--queries`` searches by random members (one
  or two words, drawn by the same Zipf law, so common words are common),
  with 1 searcher and with 50 at once;
- ``lag_p50_ms`` / ``lag_p99_ms``: with the real change-log runner and
  indexer following the store, how long after its append a message is in
  the index while ``--rate`` messages a second are appended.

``tantivy`` (``--engines fts5,tantivy``) indexes the same folded texts in a
tantivy index (``en_stem`` tokenizer) and restricts each query to the
searcher's conversations with a term-set filter; it is measured for the
choice of the embedded engine (docs/benchmarks.md, "Search") and needs the
``tantivy`` package (a development dependency). One JSON row per engine on
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from tidings.app import BUILT_IN, open_store
from tidings.changelog.runner import ChangeRunner, RunnerOptions
from tidings.core.models import ConversationKind, NewMessage
from tidings.core.ports.store.composite import Store
from tidings.features.host import content_kinds_of, schema_of
from tidings.features.search import index_for
from tidings.features.search.keeper import Keeper
from tidings.features.search.metrics import SearchMetrics
from tidings.features.search.port import Search, SearchIndex
from tidings.features.search.query import parse
from tidings.features.search.settings import SearchSettings
from tidings.features.search.text import fold
from tidings.features.search.workers import WORKER_NAME, Indexer
from tidings.observability.metrics import Metrics
from tidings.settings import Settings
from tidings_tools.bench.cluster import (
    DEFAULT_POSTGRES_ADMIN_URL,
    create_database,
    drop_database,
    with_database,
)

MESSAGES = 1_000_000
CONVERSATIONS = 10_000
USERS = 2_000
VOCABULARY = 30_000
ZIPF_S = 1.07
QUERIES = 500
CONCURRENT = 50
RATE = 1000
LAG_SECONDS = 20.0
IN_FLIGHT = 2048
"""Appends in flight while the corpus is written (the stores batch them)."""
PAGE = 20
_FUNCTION_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "not",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
]
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """Common English function words first, then pronounceable made-up words:
    rank 1 is the most frequent under the Zipf law."""
    words = list(_FUNCTION_WORDS)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Corpus:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.words = vocabulary(args.vocabulary, self.rng)
        weights = [1 / (rank**ZIPF_S) for rank in range(1, len(self.words) + 1)]
        self.cumulative = list(itertools.accumulate(weights))

    def draw(self, count: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=count)

    def text(self) -> str:
        return " ".join(self.draw(self.rng.randint(4, 16)))


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def fill(store: Store, corpus: Corpus, args: argparse.Namespace) -> dict[str, list[str]]:
    """Users, conversations and messages; each user's conversation ids."""
    rng = corpus.rng
    users = [(await store.create_user(f"b{i}", "x", 0)).user_id for i in range(args.users)]
    member_of: dict[str, list[str]] = {u: [] for u in users}
    conversations: list[tuple[str, list[str]]] = []
    for _ in range(args.conversations):
        members = rng.sample(users, rng.randint(2, 8))
        conversation, _ = await store.create_conversation(
            ConversationKind.GROUP, members[0], members[1:], "bench", 0
        )
        conversations.append((conversation.conversation_id, members))
        for user in members:
            member_of[user].append(conversation.conversation_id)
    start = time.time_ns() // 1_000_000 - args.messages
    sent = itertools.count()

    async def one() -> None:
        n = next(sent)
        cid, members = rng.choice(conversations)
        content = msgspec.json.encode({"text": corpus.text()})
        sender = rng.choice(members)
        await store.append(NewMessage(cid, sender, "d_bench", f"m{n}", content, start + n))

    for first in range(0, args.messages, IN_FLIGHT):
        await asyncio.gather(*(one() for _ in range(min(IN_FLIGHT, args.messages - first))))
    return member_of


def _queries(corpus: Corpus, member_of: dict[str, list[str]], count: int) -> list[tuple[str, str]]:
    users = [u for u, convs in member_of.items() if convs]
    return [
        (corpus.rng.choice(users), " ".join(corpus.draw(corpus.rng.choice((1, 2)))))
        for _ in range(count)
    ]


async def _latencies(
    queries: list[tuple[str, str]], run: Callable[[str, str], Awaitable[object]], concurrent: int
) -> dict[str, float]:
    samples: list[float] = []
    pending = iter(queries)

    async def searcher() -> None:
        for user, q in pending:
            started = time.perf_counter()
            await run(user, q)
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(searcher() for _ in range(concurrent)))
    return _percentiles(samples)


async def _query_figures(
    queries: list[tuple[str, str]], run: Callable[[str, str], Awaitable[object]]
) -> dict[str, float]:
    """p50/p99 of the queries with one searcher (``c1_``), then with 50 at once."""
    figures: dict[str, float] = {}
    for concurrent in (1, CONCURRENT):
        latencies = await _latencies(queries, run, concurrent)
        figures.update({f"c{concurrent}_{k}": v for k, v in latencies.items()})
    return figures


def _size_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


async def _index_size(index: SearchIndex, settings: Settings, directory: Path) -> float:
    if settings.store_url.startswith("sqlite"):
        return _size_mib(directory)
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(settings.store_url)
    try:
        size: int = await conn.fetchval("SELECT pg_total_relation_size('search_entries')")
    finally:
        await conn.close()
    return round(size / 2**20, 1)


async def measure_engine(
    name: str,
    store: Store,
    settings: Settings,
    directory: Path,
    corpus: Corpus,
    member_of: dict[str, list[str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The feature's own engine for the store (FTS5 or PostgreSQL)."""
    own = SearchSettings(index_dir=str(directory))
    index = index_for(settings, own, store.engine_access())
    await index.start()
    metrics = Metrics()
    keeper = Keeper(index, store, content_kinds_of(BUILT_IN), own, SearchMetrics(metrics))
    try:
        started = time.perf_counter()
        generation = await keeper.rebuild()
        elapsed = time.perf_counter() - started
        row: dict[str, Any] = {
            "engine": name,
            "messages": args.messages,
            "indexing_msgs_per_s": round(args.messages / elapsed),
            "index_mib": await _index_size(index, settings, directory),
        }

        async def run(user: str, q: str) -> object:
            return await index.search(generation, Search(user, parse(q), PAGE))

        row.update(await _query_figures(_queries(corpus, member_of, args.queries), run))
        row.update(await _lag(store, keeper, index, corpus, member_of, metrics, args))
    finally:
        await index.close()
    return row


async def _lag(
    store: Store,
    keeper: Keeper,
    index: SearchIndex,
    corpus: Corpus,
    member_of: dict[str, list[str]],
    metrics: Metrics,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Append ``--rate`` messages a second with the real runner and indexer
    following; how long until the index's position passes each batch's."""
    options = RunnerOptions.from_settings(Settings())
    holder = "bench"
    # The indexer resumes where the rebuild left off, as on a node after a reindex.
    head = (await store.changes_after(0, 1)).head
    await store.take_consumer_lease(WORKER_NAME, holder, options.lease_ms)
    await store.save_consumer_position(WORKER_NAME, head, holder, options.lease_ms)
    await store.release_consumer_lease(WORKER_NAME, holder)
    runner = ChangeRunner(store, Indexer(keeper), metrics, options, holder)
    runner.start()
    pending: list[tuple[float, int]] = []
    lags: list[float] = []
    stop = asyncio.Event()
    pairs = [(u, c) for u, convs in member_of.items() for c in convs]

    async def watch() -> None:
        while not stop.is_set() or pending:
            live = await index.live()
            now = time.perf_counter()
            while pending and live is not None and pending[0][1] <= live.position:
                lags.append(now - pending.pop(0)[0])
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    tick = 0.01
    per_tick = max(1, round(args.rate * tick))
    n = itertools.count()
    try:
        deadline = time.perf_counter() + args.lag_seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await asyncio.gather(
                *(
                    store.append(
                        NewMessage(
                            (pair := corpus.rng.choice(pairs))[1],
                            pair[0],
                            "d_bench",
                            f"lag{next(n)}",
                            msgspec.json.encode({"text": corpus.text()}),
                            time.time_ns() // 1_000_000,
                        )
                    )
                    for _ in range(per_tick)
                )
            )
            pending.append((began, (await store.changes_after(0, 1)).head))
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - began)))
        stop.set()
        await asyncio.wait_for(watcher, 60)
    finally:
        stop.set()
        watcher.cancel()
        await runner.stop()
    result = _percentiles(lags)
    return {
        "lag_rate_msgs_per_s": args.rate,
        "lag_p50_ms": result["p50_ms"],
        "lag_p99_ms": result["p99_ms"],
    }


def _tantivy(directory: Path) -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("conversation_id", stored=True, tokenizer_name="raw")
    builder.add_integer_field("seq", stored=True, indexed=True, fast=True)
    builder.add_integer_field("ts", stored=True, fast=True)
    builder.add_text_field("text", stored=True, index_option="basic", tokenizer_name="raw")
    schema = builder.build()
    directory.mkdir(parents=True, exist_ok=True)
    return tantivy, schema, tantivy.Index(schema, path=str(directory))


async def measure_tantivy(
    store: Store,
    directory: Path,
    corpus: Corpus,
    member_of: dict[str, list[str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The same folded texts in tantivy; access by a term-set filter on the
    searcher's conversations (no join is possible outside the database)."""
    tantivy, schema, index = _tantivy(directory)
    kinds = content_kinds_of(BUILT_IN)
    writer = index.writer(heap_size=256 * 2**20, num_threads=2)
    started = time.perf_counter()
    position = 0
    while True:
        batch = await store.changes_after(position, 5000)
        for change in batch.changes:
            m = change.message
            text = kinds.indexable_text(m.content)
            if text:
                writer.add_document(
                    tantivy.Document(
                        body=fold(text),
                        conversation_id=m.conversation_id,
                        seq=m.seq,
                        ts=m.ts,
                        text=text,
                    )
                )
        position = batch.next_position
        if len(batch.changes) < 5000:
            break
    writer.commit()
    writer.wait_merging_threads()
    elapsed = time.perf_counter() - started
    index.reload()
    searcher = index.searcher()
    row: dict[str, Any] = {
        "engine": "tantivy",
        "messages": args.messages,
        "indexing_msgs_per_s": round(args.messages / elapsed),
        "index_mib": _size_mib(directory),
    }

    def query(user: str, q: str) -> object:
        words = index.parse_query(fold(q), ["body"], conjunction_by_default=True)
        allowed = tantivy.Query.term_set_query(schema, "conversation_id", member_of[user])
        both = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, words), (tantivy.Occur.Must, allowed)]
        )
        hits = searcher.search(both, PAGE).hits
        return [searcher.doc(address)["text"] for _, address in hits]

    async def run(user: str, q: str) -> object:
        return await asyncio.to_thread(query, user, q)

    row.update(await _query_figures(_queries(corpus, member_of, args.queries), run))
    return row


async def run_search_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-search-"))
    database: str | None = None
    try:
        overrides: dict[str, Any] = {"data_dir": str(workdir / "data")}
        if args.store == "postgres":
            database = await create_database(args.postgres_url)
            overrides["store"] = with_database(args.postgres_url, database)
        settings = Settings().replace(**overrides)
        (workdir / "data").mkdir()
        store = open_store(settings, schema_of(BUILT_IN))
        await store.start()
        try:
            corpus = Corpus(args)
            started = time.perf_counter()
            member_of = await fill(store, corpus, args)
            print(
                f"corpus: {args.messages} messages in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
            rows = []
            for engine in args.engines.split(","):
                if engine == "tantivy":
                    row = await measure_tantivy(store, workdir / "tantivy", corpus, member_of, args)
                else:
                    row = await measure_engine(
                        engine, store, settings, workdir / "search", corpus, member_of, args
                    )
                row.update({"store": args.store, "conversations": args.conversations})
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            await store.close()
        return rows
    finally:
        if database is not None:
            await drop_database(args.postgres_url, database)
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    rows = asyncio.run(run_search_bench(args))
    for row in rows:
        print(
            f"{row['engine']}: {row['indexing_msgs_per_s']} msgs/s indexed, {row['index_mib']} MiB,"
            f" p99 {row['c1_p99_ms']} ms (1 searcher) / {row['c50_p99_ms']} ms (50)",
            file=sys.stderr,
        )
    return 0


def add_parser(scenarios: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = scenarios.add_parser(
        "search",
        help="search engines: indexing rate, query p50/p99, index size, index lag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--vocabulary", type=int, default=VOCABULARY)
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument(
        "--rate", type=int, default=RATE, help="appends a second while lag is measured"
    )
    parser.add_argument("--lag-seconds", type=float, default=LAG_SECONDS)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--engines",
        default="fts5",
        help="comma-separated: fts5 (SQLite store), postgres (--store postgres), tantivy",
    )
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_ADMIN_URL)
    parser.set_defaults(func=run)
