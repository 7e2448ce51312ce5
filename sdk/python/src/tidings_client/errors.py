"""The errors the client SDK raises.

Every failure the SDK reports is a :class:`TidingsClientError` carrying the
protocol's stable error ``code``, so an application writes one ``except`` and
branches on ``code`` / ``retryable`` instead of on transport details. Codes
that the server sends (``not_member``, ``rate_limited``, ...) come through
unchanged; the SDK adds three codes of its own for failures no server frame
describes::

    TidingsClientError             .code .message .retryable .retry_after_ms .status
     ├── ConnectionClosedError     code "connection_closed" (retryable); .close_code
     ├── RequestTimeoutError       code "timeout" (retryable): no answer in time
     └── InvalidStateError         code "invalid_state": the call does not fit the
                                   connection's state (e.g. send before welcome)

``retryable`` follows the server: ``rate_limited`` and ``unavailable`` are
answered by resending the same frame (same ``client_msg_id``) after
``retry_after_ms``.
"""

from __future__ import annotations

# Codes the SDK raises itself (the server's codes are listed in docs/protocol.md).
CONNECTION_CLOSED = "connection_closed"
TIMEOUT = "timeout"
INVALID_STATE = "invalid_state"
# A server answer that does not match the protocol (bad JSON, a missing field).
BAD_RESPONSE = "bad_response"

# Server codes that are worth a retry with the same frame. ``internal`` is
# included because the store may have failed transiently; resending is safe
# since a rejected frame changes nothing stored and sends are idempotent.
RETRYABLE_CODES = frozenset({"rate_limited", "unavailable", "internal", TIMEOUT, CONNECTION_CLOSED})


class TidingsClientError(Exception):
    """A failure with a stable protocol error code.

    ``status`` is the HTTP status for errors from :class:`TidingsHTTP`, else ``None``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = code in RETRYABLE_CODES if retryable is None else retryable
        self.retry_after_ms = retry_after_ms
        self.status = status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"retryable={self.retryable!r}, retry_after_ms={self.retry_after_ms!r})"
        )


class ConnectionClosedError(TidingsClientError):
    """The WebSocket closed before the answer came; resend after reconnecting."""

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(CONNECTION_CLOSED, message, retryable=True)
        self.close_code = close_code


class RequestTimeoutError(TidingsClientError):
    """No answer within the timeout; the request may or may not have taken effect.

    For ``send`` that is harmless: resend with the same ``client_msg_id`` and the
    server answers with the original seq (``duplicate=True``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(TIMEOUT, message, retryable=True)


class InvalidStateError(TidingsClientError):
    """The call does not fit the connection's lifecycle state: a programming error."""

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_STATE, message, retryable=False)
