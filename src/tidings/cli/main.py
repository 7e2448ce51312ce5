"""The ``tidings`` command line: its options, and one line per operator mistake."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from tidings import __version__
from tidings.cli import accounts, conversations, search, store_commands, trace
from tidings.cli.errors import OperatorError, explain
from tidings.cli.serve import serve
from tidings.settings import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

DESCRIPTION = """\
Tidings, a self-hosted real-time chat server.

Settings come from, last one winning: built-in defaults, a TOML file
(--config), TIDINGS_* environment variables (TIDINGS_PORT, TIDINGS_STORE,
TIDINGS_BUS, ...; docs/operations.md lists them all), and the options below.
Admin commands find the store the way `tidings serve` does.
"""

EPILOG = """\
examples:
  tidings serve                               SQLite under ./data, http://127.0.0.1:8080
  tidings user add alice                      asks for a password on a terminal
  tidings backup /backups/tidings-monday.db   an online copy, the server may run
  tidings restore --from /backups/tidings-monday.db   (stop the server first)
  tidings trace m_0123 --json                 a message's stages, one JSON object per line

Run `tidings COMMAND --help` for a command's options.
"""

EXIT_MISTAKE = 1
EXIT_BUG = 70  # EX_SOFTWARE


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions and examples as written."""


def _store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the store is")
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder of the embedded SQLite store (default ./data; env TIDINGS_DATA_DIR)",
    )
    group.add_argument(
        "--store",
        metavar="URL",
        help="store URL instead: sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST/DB"
        " (default sqlite:///DATA_DIR/tidings.db; env TIDINGS_STORE)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of settings (keys as the TIDINGS_* names, lower case, without the prefix)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the full traceback of an error",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Command,
    summary: str,
    description: str = "",
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        formatter_class=_Formatter,
    )
    _store_options(parser)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(
        sub,
        "serve",
        serve,
        "run the server",
        "Run one Tidings node until Ctrl-C or SIGTERM; SIGTERM drains it (clients are told\n"
        "to reconnect after a random delay). Creates the data directory, not its parents.",
    )
    run.add_argument("--host", help="interface to listen on (default 127.0.0.1; env TIDINGS_HOST)")
    run.add_argument(
        "--port", type=int, help="TCP port for HTTP and WebSocket (default 8080; env TIDINGS_PORT)"
    )

    _command(
        sub,
        "migrate",
        store_commands.migrate,
        "create the store or bring its schema up to date",
        "Create the store (and the data directory, not its parents) or apply new\n"
        "migrations; `tidings serve` does the same at start.",
    )

    backup = _command(
        sub,
        "backup",
        store_commands.backup,
        "write a consistent copy of the SQLite store (the server may run)",
    )
    backup.add_argument("output", help="file to create; it must not exist, its folder must")

    restore = _command(
        sub,
        "restore",
        store_commands.restore,
        "put a SQLite backup in place, or mark a restored store (stop the server first)",
        "With --from FILE: check FILE (a Tidings store of a known schema that passes\n"
        "SQLite's integrity check), keep the current store as a dated copy beside it\n"
        "(tidings.db.replaced-YYYYmmddTHHMMSSZ), and swap FILE in atomically. Without\n"
        "--from (after pg_restore, say): give the store a new epoch. Either way clients\n"
        "learn that messages after the backup may be gone and resend their own.\n"
        "Refused while a server uses the store; nothing changes unless every check passes.",
    )
    restore.add_argument(
        "--from", dest="source", metavar="FILE", help="SQLite backup to put in place"
    )
    report = _command(
        restore.add_subparsers(dest="action", metavar="report"),
        "report",
        store_commands.restore_report,
        "what devices reported missing after the latest restore",
        "After a restore, clients report per conversation how many messages they hold\n"
        "beyond the server's history (their own, which they resend, and others', which\n"
        "are gone from the server). This prints the restore's window and those gaps.",
    )
    report.add_argument("--json", action="store_true", help="one JSON object")

    traced = _command(
        sub,
        "trace",
        trace.trace,
        "print a message's lifecycle across nodes (the server may run)",
        "Print each stage of a message's life, in time order across nodes: received,\n"
        "persisted, published, acked, delivered and redelivered per device, client_acked\n"
        "per device, read per user. Messages are traced on a single node, and a sample\n"
        "of them on a cluster, and kept for the trace retention (docs/operations.md).",
    )
    traced.add_argument("id", metavar="MESSAGE_ID|CLIENT_MSG_ID")
    traced.add_argument("--json", action="store_true", help="one JSON object per stage and line")

    users = sub.add_parser("user", help="manage accounts", description="Manage accounts.")
    user = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    password_help = (
        "the password (default: $TIDINGS_NEW_PASSWORD, else asked on a terminal, else a"
        " generated one, printed once)"
    )
    add = _command(user, "add", accounts.add, "create an account")
    add.add_argument("name", help="3-32 letters, digits, '_', '.' or '-'")
    add.add_argument("--password", help=password_help)
    listing = _command(user, "list", accounts.list_accounts, "list accounts")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    disable = _command(
        user,
        "disable",
        accounts.disable,
        "stop an account from logging in and revoke its tokens",
        "Stop an account from logging in and revoke every token it holds; its open\n"
        "sessions on running servers are closed.",
    )
    disable.add_argument("name")
    enable = _command(user, "enable", accounts.enable, "let a disabled account log in again")
    enable.add_argument("name")
    reset = _command(
        user, "reset", accounts.reset, "set a new password and revoke every token of an account"
    )
    reset.add_argument("name")
    reset.add_argument("--password", help=password_help)

    convs = sub.add_parser(
        "conversation", help="manage conversations", description="Manage conversations."
    )
    conv = convs.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _command(conv, "create", conversations.create, "create a conversation")
    create.add_argument(
        "--kind", choices=["direct", "group"], default="group", help="(default group)"
    )
    create.add_argument("--title", help="a group's title")
    create.add_argument("--creator", required=True, help="username of the creator (an admin)")
    create.add_argument("members", nargs="+", help="usernames of the other members")

    searches = sub.add_parser(
        "search", help="manage the search index", description="Manage the search index."
    )
    search_actions = searches.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(
        search_actions,
        "reindex",
        search.reindex,
        "rebuild the search index from the store, then swap (the server may run)",
        "Build a new search index beside the live one from every message of the store,\n"
        "with a progress bar, then make it the live one; a running server keeps\n"
        "answering from the old one until then, and catches the new one up at once.",
    )

    _register_tools(sub)
    return parser


def _register_tools(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bench`` and ``sim`` live in the tools distribution (``tools/``), which a
    development install has and a production install does not need."""
    if importlib.util.find_spec("tidings_tools") is None:
        return  # a broken tools install still fails loudly below
    from tidings_tools.bench.command import register as register_bench
    from tidings_tools.sim.command import register as register_sim

    register_bench(sub)
    register_sim(sub)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data_dir", None),
        "store": getattr(args, "store", None),
    }
    try:
        return load_settings(getattr(args, "config", None), overrides=overrides)
    except OSError as exc:
        raise OperatorError(f"cannot read the settings file: {exc}") from exc
    except ValueError as exc:
        raise OperatorError(str(exc)) from exc


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    settings: Settings | None = None
    try:
        if hasattr(args, "func"):  # bench and sim run their own event loops
            result: int = args.func(args)
            return result
        settings = _settings(args)
        handler: Command = args.handler
        return _run_loop(handler(args, settings))
    except KeyboardInterrupt:
        return 130
    except OperatorError as exc:
        return _fail(str(exc), debug)
    except Exception as exc:
        message = explain(exc, settings)
        if message is not None:
            return _fail(message, debug)
        traceback.print_exc()
        print(
            f"tidings: internal error: {type(exc).__name__}: {exc} (a bug: please report it"
            " with the traceback above)",
            file=sys.stderr,
        )
        return EXIT_BUG


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"tidings: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_MISTAKE
