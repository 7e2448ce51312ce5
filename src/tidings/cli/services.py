"""The services an admin command works through, on the configured store and bus.

Commands change accounts and conversations the way the API does, through
the core's services, never the store directly: the rules are the same, and
what a change announces goes out on the bus the nodes listen to. With a
Redis bus the running nodes hear it at once (a new conversation reaches its
members' open sessions, a disabled account's sessions are closed). With the
in-process bus of a single node (``memory://``) no one would hear it in this
process, so the command announces through the store and the node relays it
onto its bus within ``announcement_poll_ms`` (``bus/store_relay.py``;
docs/architecture.md, "Admin commands and running nodes").
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tidings.bus.store_relay import AnnouncingBus
from tidings.cli.errors import OperatorError
from tidings.cli.store_access import using_store
from tidings.core.accounts import AccountService
from tidings.core.auth import AuthService
from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.models import User
from tidings.core.publisher import Publisher
from tidings.core.service import ChatService
from tidings.settings import Settings


@dataclass(frozen=True)
class AdminServices:
    chat: ChatService
    auth: AuthService
    accounts: AccountService

    async def find(self, username: str) -> User:
        """The user an operator named, or an error that says where names are listed."""
        try:
            return await self.accounts.find_user(username)
        except TidingsError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            raise OperatorError(
                f"no user {username!r}; `tidings user list` shows the users"
            ) from None


def _ignore(_topic: str, _payload: bytes) -> None:
    """An admin command publishes only; what it would hear is the nodes' business."""


@asynccontextmanager
async def using_services(settings: Settings) -> AsyncIterator[AdminServices]:
    """The services over the existing store and the configured bus; on the way
    out, an announcement the bus did not take is tried once more, then
    reported (the change itself is stored: clients get it at their next sync)."""
    from tidings.app import BUILT_IN, is_in_process, open_bus
    from tidings.features.host import content_kinds_of

    async with using_store(settings) as store:
        bus = AnnouncingBus(store) if is_in_process(settings) else open_bus(settings)
        await bus.start(_ignore)
        publisher = Publisher(bus)
        try:
            yield AdminServices(
                ChatService(store, publisher, settings, content_kinds_of(BUILT_IN)),
                AuthService(
                    store, settings.password_hash_memory_kib, settings.password_hash_time_cost
                ),
                AccountService(store, publisher),
            )
            if publisher.held:
                await publisher.republish()
            if publisher.held:
                print(
                    "tidings: warning: the bus did not take the announcement; running"
                    " nodes learn the change at their clients' next sync",
                    file=sys.stderr,
                )
        finally:
            await publisher.close()
            await bus.close()
