"""The ``tidings`` command: serve, migrate, admin commands and benchmarks.

Admin commands open the configured store directly (the same settings as
``serve``), so they work with the server running or stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import msgspec

from tidings.settings import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data_dir", None),
        "store": getattr(args, "store", None),
    }
    return load_settings(getattr(args, "config", None), overrides=overrides)


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


# The cyclic GC's default first-generation threshold (700 allocations) makes
# it run every few messages under load; perf showed 5% of the server's CPU in
# gc_collect_main and its visitors. Frames, events and records are acyclic, so
# collecting less often costs little memory.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Collect less often, and keep the objects built at start-up out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from tidings.app import build_node, create_app, open_acceptor
    from tidings.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    node = build_node(settings)
    runner = web.AppRunner(create_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    acceptor = open_acceptor(node, runner.server, settings)
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


async def _with_store(settings: Settings, action: Callable[..., Awaitable[int]]) -> int:
    from tidings.app import open_store

    store = open_store(settings)
    await store.start()
    try:
        return await action(store)
    finally:
        await store.close()


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: object) -> int:
        print(f"store at {settings.store_url} is migrated", file=sys.stderr)
        return 0

    return await _with_store(settings, action)


async def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.core.auth import AuthService
    from tidings.core.errors import TidingsError
    from tidings.store.base import Store

    password = args.password or os.environ.get("TIDINGS_NEW_PASSWORD")
    generated = False
    if not password:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.name}: ")
        else:
            password = secrets.token_urlsafe(12)
            generated = True

    async def action(store: Store) -> int:
        auth = AuthService(
            store, settings.password_hash_memory_kib, settings.password_hash_time_cost
        )
        try:
            user = await auth.register(args.name, password)
        except TidingsError as exc:
            print(f"error: {exc.code.value}: {exc.message}", file=sys.stderr)
            return 1
        out = {"user_id": user.user_id, "username": user.username}
        if generated:
            out["password"] = password
        print(msgspec.json.encode(out).decode())
        return 0

    return await _with_store(settings, action)


async def _conversation_create(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.bus.memory import MemoryBus
    from tidings.core.errors import TidingsError
    from tidings.core.ids import now_ms
    from tidings.core.models import ConversationKind, Device
    from tidings.core.service import ChatService
    from tidings.store.base import Store

    async def action(store: Store) -> int:
        ids = []
        for name in [args.creator, *args.members]:
            creds = await store.get_credentials(name)
            if creds is None:
                print(f"error: no user {name!r}", file=sys.stderr)
                return 1
            ids.append(creds.user.user_id)
        service = ChatService(store, MemoryBus(), settings)
        admin = Device("cli", ids[0], "cli", now_ms())
        try:
            conv, created = await service.create_conversation(
                admin, ConversationKind(args.kind), ids[1:], args.title
            )
        except TidingsError as exc:
            print(f"error: {exc.code.value}: {exc.message}", file=sys.stderr)
            return 1
        print(
            msgspec.json.encode(
                {"conversation_id": conv.conversation_id, "created": created}
            ).decode()
        )
        return 0

    return await _with_store(settings, action)


async def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.store.base import Store
    from tidings.store.sqlite import SqliteStore

    async def action(store: Store) -> int:
        if not isinstance(store, SqliteStore):
            print(
                "error: online backup is built in for SQLite only; for PostgreSQL use "
                "pg_dump or pg_basebackup (docs/operations.md, 'Backup and restore')",
                file=sys.stderr,
            )
            return 2
        if await asyncio.to_thread(os.path.exists, args.output):
            print(f"error: {args.output} exists; not overwriting it", file=sys.stderr)
            return 1
        taken_at = await store.backup_to(args.output)
        out = {"backup": args.output, "epoch": store.epoch, "taken_at": taken_at}
        print(msgspec.json.encode(out).decode())
        return 0

    return await _with_store(settings, action)


def _put_in_place(source: str, target: str) -> None:
    """Replace the SQLite database with a backup (and drop the old WAL, whose
    frames belong to the replaced file and must not be replayed onto the copy)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    for stale in (target + "-wal", target + "-shm"):
        if os.path.exists(stale):
            os.remove(stale)
    shutil.copyfile(source, target)


async def _restore(args: argparse.Namespace, settings: Settings) -> int:
    """Give a restored store a new epoch (and, for SQLite, put the copy in place)."""
    from tidings.store.base import Store

    if args.source:
        if not settings.store_url.startswith("sqlite:///"):
            print(
                "error: --from is for SQLite; restore PostgreSQL with pg_restore first",
                file=sys.stderr,
            )
            return 2
        await asyncio.to_thread(_put_in_place, args.source, settings.store_url[len("sqlite://") :])

    async def action(store: Store) -> int:
        from tidings.ops.restores import mark_restored

        restore = await mark_restored(store)
        print(msgspec.json.encode(restore).decode())
        return 0

    return await _with_store(settings, action)


async def _restore_report(args: argparse.Namespace, settings: Settings) -> int:
    """Print what the devices reported after the latest restore (for ops review)."""
    from tidings.ops.restore_report import latest_restore_report, render_text
    from tidings.store.base import Store

    async def action(store: Store) -> int:
        report = await latest_restore_report(store)
        if report is None:
            print("error: this store was never restored", file=sys.stderr)
            return 1
        print(msgspec.json.encode(report).decode() if args.json else render_text(report))
        return 0

    return await _with_store(settings, action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML settings file")
        p.add_argument("--data-dir", help="data directory (SQLite database)")
        p.add_argument("--store", help="store URL (default sqlite:///DATA_DIR/tidings.db)")

    serve = sub.add_parser("serve", help="run the server")
    common(serve)
    serve.add_argument("--host", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.set_defaults(handler=_serve)

    migrate = sub.add_parser("migrate", help="create or upgrade the store's schema")
    common(migrate)
    migrate.set_defaults(handler=_migrate)

    backup = sub.add_parser(
        "backup", help="write a consistent online copy of the SQLite store to OUTPUT"
    )
    common(backup)
    backup.add_argument("output", help="file to create (must not exist)")
    backup.set_defaults(handler=_backup)

    restore = sub.add_parser(
        "restore",
        help="after restoring a backup: assign the store a new epoch (stop the server first)",
    )
    common(restore)
    restore.add_argument("--from", dest="source", help="SQLite backup file to put in place first")
    restore.set_defaults(handler=_restore)
    report = restore.add_subparsers(dest="action").add_parser(
        "report", help="what devices reported missing after the latest restore"
    )
    common(report)
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.set_defaults(handler=_restore_report)

    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    user_add = user.add_parser(
        "add",
        help="create a user (password from --password, "
        "$TIDINGS_NEW_PASSWORD, a prompt, or generated)",
    )
    common(user_add)
    user_add.add_argument("name")
    user_add.add_argument("--password")
    user_add.set_defaults(handler=_user_add)

    conv = sub.add_parser("conversation", help="manage conversations").add_subparsers(
        dest="action", required=True
    )
    conv_create = conv.add_parser("create", help="create a conversation between usernames")
    common(conv_create)
    conv_create.add_argument("--kind", choices=["direct", "group"], default="group")
    conv_create.add_argument("--title")
    conv_create.add_argument("--creator", required=True, help="username of the creator (admin)")
    conv_create.add_argument("members", nargs="+", help="usernames of the other members")
    conv_create.set_defaults(handler=_conversation_create)

    from tidings.bench.command import register as register_bench
    from tidings.sim.command import register as register_sim

    register_bench(sub)
    register_sim(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "func"):  # the bench subcommand runs its own event loops
        result: int = args.func(args)
        return result
    try:
        settings = _settings(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    handler: Command = args.handler
    return _run_loop(handler(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
