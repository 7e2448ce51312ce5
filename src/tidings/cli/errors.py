"""Operator mistakes as one line each; tracebacks only for bugs (or ``--debug``).

An operator who mistypes a port or a database name needs to read what is
wrong and what to do, not a stack of frames from asyncpg or the event loop.
Commands raise :class:`OperatorError` for what they check themselves;
:func:`explain` recognises the few library exceptions an operator's
setting can cause. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit, urlunsplit

from tidings.core.errors import ErrorCode, TidingsError
from tidings.settings import Settings


class OperatorError(Exception):
    """Something the operator can fix; ``str()`` says what is wrong and what to do."""


def redact(url: str) -> str:
    """A URL fit for an error message or a log: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def listen_error(exc: OSError, settings: Settings) -> OperatorError:
    """Why the server cannot listen on ``host:port``, as the operator fixes it."""
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return OperatorError(
            f"port {settings.port} is in use; pass --port or stop the other server"
        )
    if exc.errno == errno.EACCES:
        return OperatorError(
            f"not allowed to listen on {where} (ports below 1024 need root); pass --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return OperatorError(
            f"cannot listen on {where}: {settings.host!r} is not an address of this machine;"
            " pass --host"
        )
    return OperatorError(f"cannot listen on {where}: {exc.strerror or exc}")


def explain(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for an exception a setting can cause, else None (a bug)."""
    if isinstance(exc, TidingsError) and exc.code is ErrorCode.UNAVAILABLE:
        store = redact(settings.store_url) if settings is not None else "the store"
        return (
            f"cannot open the store {store}: {exc.message.removeprefix('store unavailable: ')};"
            " check that the database server is running and that --store / TIDINGS_STORE"
            " names an existing database"
        )
    if isinstance(exc, TidingsError):
        return f"{exc.code.value}: {exc.message}"
    sqlstate = str(getattr(exc, "sqlstate", ""))
    if sqlstate.startswith(_POSTGRES_SETTING_CLASSES):
        store = redact(settings.store_url) if settings is not None else "the store"
        return f"PostgreSQL refused {store}: {exc}; check --store / TIDINGS_STORE"
    return None


_POSTGRES_SETTING_CLASSES = ("3D", "28", "08")
"""SQLSTATE classes a wrong store URL causes: no such database, bad
credentials, connection failure (asyncpg raises some before any pool exists)."""
