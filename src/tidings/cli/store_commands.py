"""``tidings migrate``, ``tidings backup`` and ``tidings restore``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import msgspec

from tidings.cli.errors import OperatorError
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
        await store.backup_to(str(output))
        print(msgspec.json.encode({"backup": str(output), "epoch": store.epoch}).decode())
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
        print(
            msgspec.json.encode(
                {
                    "restored_from": args.source,
                    "previous_epoch": outcome.previous_epoch,
                    "epoch": outcome.epoch,
                    "replaced_copy": outcome.replaced_copy,
                }
            ).decode()
        )
        print(
            f"the replaced store is kept as {outcome.replaced_copy}; remove it when you no"
            " longer need it",
            file=sys.stderr,
        )
        return 0
    return await _new_epoch(settings, live)


async def _new_epoch(settings: Settings, live: Path | None) -> int:
    """After a backup was put in place by other means (pg_restore, a file copy)."""
    lock = None
    if live is not None:
        require_existing(settings)
        lock = await asyncio.to_thread(exclusive_lock, live)
        lock.release()  # the store takes it shared; a server starting now is harmless
    async with using_store(settings) as store:
        previous = store.epoch
        epoch = await store.reset_epoch()
    print(msgspec.json.encode({"previous_epoch": previous, "epoch": epoch}).decode())
    return 0
