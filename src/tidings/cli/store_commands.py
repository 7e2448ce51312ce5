"""``tidings migrate``, ``tidings backup`` and ``tidings restore``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from tidings.cli.errors import OperatorError, redact
from tidings.cli.locations import require_existing, sqlite_path
from tidings.cli.restore import exclusive_lock, restore_file
from tidings.cli.store_access import using_store
from tidings.settings import Settings


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with using_store(settings, existing=False) as store:
        print(
            msgspec.json.encode({"store": "migrated", "epoch": store.epoch}).decode(),
        )
    return 0


def backup_target(name: str, settings: Settings) -> Path:
    """Where ``tidings backup`` may write: a new file in an existing folder."""
    if sqlite_path(settings) is None:
        raise OperatorError(
            "tidings backup copies the embedded SQLite store; back up PostgreSQL with"
            " pg_dump or pg_basebackup (docs/operations.md, 'Backup and restore')"
        )
    output = Path(name).expanduser().absolute()
    if output.exists():
        raise OperatorError(f"{name} exists; not overwriting it (pass a new file name)")
    if not output.parent.is_dir():
        raise OperatorError(
            f"cannot write {name}: folder {output.parent} does not exist; create it first"
        )
    return output


async def backup(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.store.sqlite import SqliteStore

    output = backup_target(args.output, settings)
    async with using_store(settings) as store:
        assert isinstance(store, SqliteStore)
        taken_at = await store.backup_to(str(output))
        out = {"backup": str(output), "epoch": store.epoch, "taken_at": taken_at}
        print(msgspec.json.encode(out).decode())
    return 0


async def restore(args: argparse.Namespace, settings: Settings) -> int:
    live = sqlite_path(settings)
    if args.source:
        if live is None:
            raise OperatorError(
                "--from puts a SQLite backup in place; for PostgreSQL restore with pg_restore,"
                " then run `tidings restore` without --from"
            )
        outcome = await restore_file(settings, live, args.source)
        out = {"restored_from": args.source, **msgspec.structs.asdict(outcome.restore)}
        print(msgspec.json.encode({**out, "replaced_copy": outcome.replaced_copy}).decode())
        print(
            f"the replaced store is kept as {outcome.replaced_copy}; remove it when you no"
            " longer need it",
            file=sys.stderr,
        )
        return 0
    return await _mark_restored(settings, live)


async def _mark_restored(settings: Settings, live: Path | None) -> int:
    """After a backup was put in place by other means (pg_restore, a file copy)."""
    from tidings.ops.restores import mark_restored

    # Refused while a server runs: it would go on announcing the old epoch.
    if live is not None:
        require_existing(settings)
        exclusive_lock(live).release()
    else:
        await _require_no_nodes(settings.store_url)
    async with using_store(settings) as store:
        restore = await mark_restored(store)
    print(msgspec.json.encode(restore).decode())
    return 0


async def restore_report(args: argparse.Namespace, settings: Settings) -> int:
    """What devices reported holding beyond the server after the latest restore."""
    from tidings.ops.restore_report import latest_restore_report, render_text

    async with using_store(settings) as store:
        report = await latest_restore_report(store)
    if report is None:
        raise OperatorError("this store was never restored; there is nothing to report")
    print(msgspec.json.encode(report).decode() if args.json else render_text(report))
    return 0


async def _require_no_nodes(url: str) -> None:
    from tidings.store.postgres import CONNECT_TIMEOUT_S
    from tidings.store.postgres_lock import nobody_else

    if not await nobody_else(url, CONNECT_TIMEOUT_S):
        raise OperatorError(
            f"the store {redact(url)} is in use by running nodes (or another tidings"
            " command); stop them first; nothing was changed"
        )
