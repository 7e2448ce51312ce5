"""Search: an index fed by the change log, access-controlled inside every
query, rebuildable from the store (docs/architecture.md, "Search").

``text.py`` folds text the same way for both engines; ``query.py`` parses
the query syntax and cursors; ``port.py`` is what an engine implements,
``sqlite.py`` (FTS5, files beside the store) and ``postgres.py`` (tsvector
and GIN in the store's database) the two engines, sharing their SQL
(``sql.py``); ``workers.py`` the indexer; ``keeper.py`` which generation is
live, catching up and rebuilding; ``service.py`` and ``routes.py`` the call.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from tidings.core.ports.store.engine import EngineHandle
from tidings.features import Feature, FeatureContext, Plugin
from tidings.features.search.keeper import Keeper
from tidings.features.search.metrics import SearchMetrics
from tidings.features.search.port import SearchIndex
from tidings.features.search.postgres import PostgresSearchIndex
from tidings.features.search.routes import SearchRoutes
from tidings.features.search.service import SearchService
from tidings.features.search.settings import SearchSettings
from tidings.features.search.sqlite import SqliteSearchIndex
from tidings.features.search.workers import Indexer
from tidings.settings import Settings

SQLITE_PREFIX = "sqlite://"


def index_for(settings: Settings, own: SearchSettings, database: EngineHandle) -> SearchIndex:
    """The engine for the node's store: FTS5 files beside a SQLite store, or
    tables of the PostgreSQL store's database, reached through its pool.

    The SQLite index does not write through ``database`` (the store's one
    writer) on purpose: a rebuild of a million entries would hold the writer
    that every send waits for (docs/architecture.md, "Search")."""
    if database.engine == "postgres":
        return PostgresSearchIndex(database)
    url = settings.store_url
    if url.startswith(SQLITE_PREFIX):
        # sqlite:///path and sqlite:////path (as settings build it) name one file.
        store_path = Path("/" + unquote(url[len(SQLITE_PREFIX) :].split("?", 1)[0]).lstrip("/"))
        directory = own.index_dir or str(store_path.parent / "search")
        return SqliteSearchIndex(str(store_path), directory)
    raise ValueError(f"search: no engine for the store {url!r}")


def _plug(context: FeatureContext) -> Plugin:
    own: SearchSettings = context.own
    metrics = SearchMetrics(context.metrics)
    keeper = Keeper(
        index_for(context.settings, own, context.database),
        context.store,
        context.service.content_kinds,
        own,
        metrics,
    )
    service = SearchService(keeper, context.service, own, metrics)
    return Plugin(
        routes=SearchRoutes(service).routes(),
        workers=[Indexer(keeper)],
        start=keeper.start,
        stop=keeper.stop,
    )


SEARCH = Feature(
    "search", settings=SearchSettings, migrations="tidings.features.search", plug=_plug
)
