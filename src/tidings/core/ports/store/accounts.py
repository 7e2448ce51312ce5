"""Accounts: users, their credentials, their devices and the devices' tokens.

A disabled account and a password reset both revoke every token in the same
transaction as the change, so no live token outlives them.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.models import Account, Credentials, Device, User


class AccountStore(Protocol):
    async def create_user(self, username: str, password_hash: str, now: int) -> User:
        """Create a user; ``CONFLICT`` if the username (case-insensitive) is taken."""
        ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def get_credentials(self, username: str) -> Credentials | None:
        """The user, password hash and disabled flag for a username (case-insensitive)."""
        ...

    async def list_accounts(self, after_username: str = "", limit: int = 100) -> list[Account]:
        """Accounts ordered by lower-cased username, from after ``after_username`` (a page)."""
        ...

    async def set_disabled(self, user_id: str, disabled: bool, now: int) -> bool:
        """Disable (revoking every device's token in the same transaction) or
        re-enable an account; True if the flag changed, ``NOT_FOUND`` if no user."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str, now: int) -> int:
        """Replace the password hash and revoke every device's token (a reset signs
        the account out everywhere); return how many tokens were revoked."""
        ...

    async def create_device(self, user_id: str, name: str, token_hash: str, now: int) -> Device:
        """Register a device (one login) whose bearer token hashes to ``token_hash``;
        ``NOT_FOUND`` for an unknown user, ``FORBIDDEN`` for a disabled one (a
        login racing ``set_disabled`` cannot leave a live token behind)."""
        ...

    async def device_for_token(self, token_hash: str) -> Device | None:
        """The live (not revoked) device for a token hash, else None."""
        ...

    async def revoke_device(self, device_id: str) -> bool:
        """Revoke a device's token; True if it was live."""
        ...
