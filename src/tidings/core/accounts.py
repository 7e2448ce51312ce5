"""Accounts as the API and the operator see them: looking users up, listing,
disabling and re-enabling.

Signing in, passwords and tokens are :class:`~tidings.core.auth.AuthService`'s;
this service is what a transport or an admin command asks about accounts
instead of the store, so that a change (disabling) is announced on the bus
and the nodes holding the user's sessions act on it at once.
"""

from __future__ import annotations

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.events import DisabledEvent, SignedOutEvent, user_topic
from tidings.core.ids import now_ms
from tidings.core.models import Account, User
from tidings.core.ports.store.accounts import AccountStore
from tidings.core.publisher import Publisher

# Accounts read per store query while listing them all.
LIST_PAGE = 500


class AccountService:
    def __init__(self, store: AccountStore, publisher: Publisher) -> None:
        self._store = store
        self._publisher = publisher

    async def get_user(self, user_id: str) -> User:
        """A user by id, or ``not_found``."""
        user = await self._store.get_user(user_id)
        if user is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such user")
        return user

    async def find_user(self, username: str) -> User:
        """A user by username (case-insensitive), or ``not_found``."""
        creds = await self._store.get_credentials(username)
        if creds is None:
            raise TidingsError(ErrorCode.NOT_FOUND, "no such user")
        return creds.user

    async def list_accounts(self) -> list[Account]:
        """Every account, by lower-cased username (read page by page)."""
        after = ""
        rows: list[Account] = []
        while True:
            page = await self._store.list_accounts(after, LIST_PAGE)
            rows.extend(page)
            if len(page) < LIST_PAGE:
                return rows
            after = page[-1].user.username

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        """Disable (revoking every token) or re-enable an account; True if the
        flag changed. Disabling also ends the user's open sessions on every
        node that hears the bus (a token is only checked at hello); announced
        again when the account was already disabled, in case the first
        announcement was lost with a bus outage."""
        changed = await self._store.set_disabled(user_id, disabled, now_ms())
        if disabled:
            await self._publisher.publish(user_topic(user_id), DisabledEvent(user_id))
        return changed

    async def signed_out(self, user_id: str) -> None:
        """Every token of the user was revoked (a password reset): end their
        open sessions on every node too, as a logout ends one device's."""
        await self._publisher.publish(user_topic(user_id), SignedOutEvent(user_id))
