"""The error tree every transport speaks.

Every rejection a client can see is a :class:`TidingsError` carrying one stable
:class:`ErrorCode`. The WebSocket gateway turns it into an ``error`` frame and
the HTTP API into ``{"error": {...}}`` with :data:`HTTP_STATUS` of the code, so
that one decision produces the same answer over both transports.

    TidingsError
     ├── code: ErrorCode  (bad_frame, unknown_type, too_large, unauthorized, ...)
     ├── retryable: bool  (derived from the code)
     └── retry_after_ms: int | None  (rate_limited, unavailable)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes of the wire protocol (docs/protocol.md, "Error codes")."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    NOT_MEMBER = "not_member"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_MEMBER: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CONFLICT: 409,
}

RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)


class TidingsError(Exception):
    """A rejection with a stable code; nothing stored was changed by the request."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_ms: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"TidingsError({self.code.value!r}, {self.message!r})"
