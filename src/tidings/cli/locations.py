"""Where the store lives, checked before a command opens it.

A store is created on first open, which is right for ``serve`` and
``migrate`` and wrong for everything else: ``tidings user add --data-dir
./dta`` would add a user to a new, empty database that no server reads.
So commands that read or change an existing store refuse a location that
holds none, and ``serve`` / ``migrate`` create the data directory but never
its missing parents (a typo in a parent is far likelier than a wish for a
new tree).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from tidings.cli.errors import OperatorError
from tidings.settings import Settings
from tidings.store.sqlite_inspect import NotAStore, check_sqlite_file, inspect_store

SQLITE_PREFIX = "sqlite://"


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database file of these settings, or None for PostgreSQL."""
    url = settings.store_url
    if not url.startswith(SQLITE_PREFIX):
        return None
    # sqlite:////abs/path (as settings build it) and sqlite:///abs/path name one file.
    return Path("/" + unquote(url[len(SQLITE_PREFIX) :].split("?", 1)[0]).lstrip("/"))


def prepare_new(settings: Settings) -> None:
    """``serve`` and ``migrate``: the data directory may be created, its parents not."""
    path = sqlite_path(settings)
    if path is None:
        return
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise OperatorError(f"data directory {folder} is a file; pass --data-dir with a directory")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise OperatorError(
                f"cannot create data directory {folder}: {folder.parent} does not exist;"
                " create it first or pass another --data-dir"
            )
        try:
            folder.mkdir()
        except OSError as exc:
            raise OperatorError(f"cannot create data directory {folder}: {exc.strerror}") from exc
    if path.exists():
        try:
            inspect_store(path)
        except NotAStore as exc:
            raise OperatorError(str(exc)) from exc


def require_existing(settings: Settings) -> None:
    """Commands on an existing store: refuse a location that holds none.

    Only looks at the file's first bytes: opening a stopped store would
    create its ``-wal`` and ``-shm`` files, and a refused restore must leave
    the data directory exactly as it was.
    """
    path = sqlite_path(settings)
    if path is None:
        return
    folder = path.parent
    if not folder.exists():
        raise OperatorError(
            f"data directory {folder} does not exist; pass the --data-dir (or"
            " TIDINGS_DATA_DIR) that `tidings serve` uses"
        )
    if not folder.is_dir():
        raise OperatorError(f"data directory {folder} is a file; pass --data-dir with a directory")
    if not path.exists():
        raise OperatorError(
            f"no Tidings store in {folder} ({path.name} is missing); pass the --data-dir that"
            f" `tidings serve` uses, or create a store with `tidings migrate --data-dir {folder}`"
        )
    try:
        check_sqlite_file(path)
    except NotAStore as exc:
        raise OperatorError(f"{exc}; it is not a Tidings store") from exc
