"""``tidings search reindex``: rebuild the search index from the store,
beside the live one, then swap (docs/operations.md, "Search").

A server may run meanwhile: it keeps answering from the live index, and
once the new one is promoted it catches it up from the new one's own
position before applying anything more (``features/search/keeper.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import msgspec

from tidings.cli.errors import OperatorError
from tidings.cli.locations import require_existing, sqlite_path
from tidings.settings import Settings, load_section

BAR_WIDTH = 40
REDRAW_S = 0.2


class ProgressBar:
    """A one-line progress bar on standard error: positions reached of the stream's head."""

    def __init__(self) -> None:
        self._drawn = 0.0

    def __call__(self, position: int, head: int) -> None:
        now = time.monotonic()
        if now - self._drawn < REDRAW_S and position < head:
            return
        self._drawn = now
        share = 1.0 if head <= 0 else min(position / head, 1.0)
        filled = int(share * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        print(f"\r[{bar}] {share:6.1%}  {position}/{head}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr)


async def reindex(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.app import BUILT_IN, open_store
    from tidings.cli.serve import plugged_features
    from tidings.features.host import content_kinds_of, schema_of
    from tidings.features.search import index_for
    from tidings.features.search.keeper import Keeper
    from tidings.features.search.metrics import SearchMetrics
    from tidings.features.search.settings import SearchSettings
    from tidings.observability.metrics import Metrics

    require_existing(settings)
    try:
        own = load_section(SearchSettings, "search", getattr(args, "config", None), os.environ)
    except ValueError as exc:
        raise OperatorError(str(exc)) from exc
    features = [*BUILT_IN, *plugged_features(settings)]
    store = open_store(settings, schema_of(features))
    await store.start()
    try:
        index = index_for(settings, own, store.engine_access())
        await index.start()
        try:
            keeper = Keeper(index, store, content_kinds_of(features), own, SearchMetrics(Metrics()))
            bar = ProgressBar()
            generation = await keeper.rebuild(bar)
            bar.done()
        finally:
            await index.close()
    finally:
        await store.close()
    where = "beside the store" if sqlite_path(settings) is not None else "in the store's database"
    out = {
        "search_index": "rebuilt",
        "generation": generation.name,
        "position": generation.position,
    }
    print(msgspec.json.encode({**out, "where": where}).decode())
    return 0
