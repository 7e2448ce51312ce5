"""``tidings serve``: run one node until SIGINT or SIGTERM, then drain it."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

from tidings.cli.errors import OperatorError, listen_error
from tidings.cli.locations import prepare_new
from tidings.settings import Settings

if TYPE_CHECKING:
    from tidings.features import Feature

# The cyclic GC's default first-generation threshold (700 allocations) makes
# it run every few messages under load, a visible share of the server's CPU
# in profiles (docs/benchmarks.md, "What bounds throughput (the missed
# target)" has the figure). Frames, events and records are acyclic, so
# collecting less often costs little memory.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Collect less often, and keep the objects built at start-up out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def check_port(settings: Settings) -> None:
    """Fail on a taken or forbidden port before the store is opened and migrated."""
    from tidings.http.acceptor import listening_socket

    try:
        listening_socket(settings.host, settings.port, settings.reuse_port).close()
    except OSError as exc:
        raise listen_error(exc, settings) from exc


def plugged_features(settings: Settings) -> list[Feature]:
    """The ``features`` setting's packages, or the one-line error an operator needs."""
    from tidings.features.host import load_features

    try:
        return load_features(settings.features)
    except ValueError as exc:
        raise OperatorError(f"{exc} (setting features / TIDINGS_FEATURES)") from None


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from tidings.app import build_node, create_app, open_acceptor
    from tidings.observability.logging import configure_logging

    prepare_new(settings)
    check_port(settings)
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    node = build_node(settings, features=plugged_features(settings))
    runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        assert runner.server is not None
        try:
            acceptor = open_acceptor(node, runner.server, settings)
        except OSError as exc:
            raise listen_error(exc, settings) from exc
    except BaseException:
        await runner.cleanup()
        raise
    acceptor.start()
    print(f"tidings listening on http://{settings.host}:{settings.port}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log_stop = logging.getLogger("tidings.app")
        log_stop.info("draining", extra={"window_ms": settings.drain_window_ms})
        # Still accepting while draining: new upgrades get a quick 503. On a
        # shared port the node steps off it instead, before its clients are
        # told to reconnect (else the first of them land here again).
        node.gateway.stop_admitting()
        acceptor.refresh()
        await node.gateway.drain()
    finally:
        await acceptor.close()
        await runner.cleanup()
    return 0
