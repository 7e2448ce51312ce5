"""How PostgreSQL and driver errors become the errors the protocol promises.

Shared by the store (:mod:`tidings.store.postgres`) and its batchers
(:mod:`tidings.store.postgres_batches`): a failure to reach the database is
``unavailable`` (retryable) for every caller, and Tidings' own SQLSTATEs from
the SQL functions map to their error codes.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from tidings.core.errors import ErrorCode, TidingsError

# Tidings' own SQLSTATEs raised by the SQL functions, and PostgreSQL's for
# text it cannot hold (a NUL character, or bytes invalid in UTF-8): the
# protocol edge refuses such ids first (core/frames.py NO_NUL, http/api.py),
# so these answer only what reaches the store another way.
_SQLSTATE_CODES = {
    "TD400": ErrorCode.BAD_REQUEST,
    "TD403": ErrorCode.NOT_MEMBER,
    "TD404": ErrorCode.NOT_FOUND,
    "22021": ErrorCode.BAD_REQUEST,  # character_not_in_repertoire
    "22P05": ErrorCode.BAD_REQUEST,  # untranslatable_character
}

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionRefusedError, ConnectionResetError, unreachable host...
    TimeoutError,  # pool acquire, connect or command timeout
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, terminate, timeout
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock, serialization
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # failed over to a standby
)
"""Errors that mean "the database cannot do this now": clients retry."""

CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_UNAVAILABLE_ERRORS)


def unavailable(exc: BaseException) -> TidingsError:
    """The retryable error clients get when PostgreSQL cannot be reached."""
    detail = str(exc) or type(exc).__name__
    return TidingsError(ErrorCode.UNAVAILABLE, f"store unavailable: {detail}", retry_after_ms=1000)


def translate(exc: BaseException) -> BaseException:
    """Map a driver error to the TidingsError the protocol promises (or keep it)."""
    if isinstance(exc, asyncpg.PostgresError):
        code = _SQLSTATE_CODES.get(str(exc.sqlstate))
        if code is not None:
            return TidingsError(code, str(exc))
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return unavailable(exc)
    return exc


def store_closed() -> TidingsError:
    """The retryable error of a call on a closed (or not yet started) store."""
    return TidingsError(ErrorCode.UNAVAILABLE, "store is closed")
