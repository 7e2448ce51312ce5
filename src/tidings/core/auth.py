"""Accounts and devices: registration, login and bearer-token authentication.

Passwords are hashed with argon2id (memory-hard, the OWASP recommendation);
hashing runs in a worker thread because it takes tens of milliseconds by
design and must not stall the event loop that serves every other client.
A login creates a device and returns an opaque random token; only its SHA-256
is stored, so a database leak does not leak live tokens, and revoking the
device revokes the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import Password, Username
from tidings.core.ids import now_ms
from tidings.core.models import Device, User
from tidings.core.ports.store.accounts import AccountStore

TOKEN_PREFIX = "tdg_"
# 32 random bytes: guessing a live token is out of reach.
TOKEN_BYTES = 32
DEFAULT_DEVICE_NAME = "default"


USERNAME_RULE = "a username is 3-32 letters, digits, '_', '.' or '-'"
PASSWORD_RULE = "a password is 8-1024 characters"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_username(username: str) -> None:
    """The one username rule (the ``Username`` type the HTTP API decodes with),
    for callers that do not decode a request: the CLI."""
    try:
        msgspec.convert(username, Username)
    except msgspec.ValidationError:
        raise TidingsError(ErrorCode.BAD_REQUEST, f"{USERNAME_RULE}, not {username!r}") from None


def check_password(password: str) -> None:
    """The one password rule (the ``Password`` type), as :func:`check_username`."""
    try:
        msgspec.convert(password, Password)
    except msgspec.ValidationError:
        raise TidingsError(ErrorCode.BAD_REQUEST, PASSWORD_RULE) from None


class AuthService:
    def __init__(self, store: AccountStore, memory_kib: int, time_cost: int) -> None:
        self._store = store
        self._hasher = PasswordHasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=1)
        # Verified against when the username is unknown, so that a login's
        # duration does not tell whether a username exists.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    async def register(self, username: str, password: str) -> User:
        check_username(username)
        check_password(password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        return await self._store.create_user(username, password_hash, now_ms())

    async def reset_password(self, user_id: str, password: str) -> int:
        """Set a new password and sign the account out everywhere; return how
        many device tokens that revoked."""
        check_password(password)
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        return await self._store.set_password_hash(user_id, password_hash, now_ms())

    async def login(
        self, username: str, password: str, device_name: str | None
    ) -> tuple[str, Device]:
        creds = await self._store.get_credentials(username)
        stored = creds.password_hash if creds is not None else self._dummy_hash
        ok = await asyncio.to_thread(self._verify, stored, password)
        if creds is None or not ok:
            raise TidingsError(ErrorCode.UNAUTHORIZED, "wrong username or password")
        if creds.disabled:
            # Only said to someone who knows the password.
            raise TidingsError(ErrorCode.FORBIDDEN, "this account is disabled")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        device = await self._store.create_device(
            creds.user.user_id, device_name or DEFAULT_DEVICE_NAME, hash_token(token), now_ms()
        )
        return token, device

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def authenticate(self, token: str | None) -> Device:
        """The device a bearer token belongs to, or ``unauthorized``."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise TidingsError(ErrorCode.UNAUTHORIZED, "missing or malformed token")
        device = await self._store.device_for_token(hash_token(token))
        if device is None:
            raise TidingsError(ErrorCode.UNAUTHORIZED, "invalid or revoked token")
        return device
