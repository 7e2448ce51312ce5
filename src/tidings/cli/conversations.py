"""``tidings conversation create``: a conversation between existing users."""

from __future__ import annotations

import argparse

import msgspec

from tidings.cli.errors import OperatorError
from tidings.cli.store_access import using_store
from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.models import ConversationKind, Device
from tidings.settings import Settings


async def create(args: argparse.Namespace, settings: Settings) -> int:
    from tidings.bus.memory import MemoryBus
    from tidings.core.content_kinds import ContentKinds
    from tidings.core.service import ChatService

    async with using_store(settings) as store:
        ids = []
        for name in [args.creator, *args.members]:
            creds = await store.get_credentials(name)
            if creds is None:
                raise OperatorError(f"no user {name!r}; `tidings user list` shows the users")
            ids.append(creds.user.user_id)
        # Only creates a conversation: no client content, so only the core's kinds.
        service = ChatService(store, MemoryBus(), settings, ContentKinds())
        admin = Device("cli", ids[0], "cli", now_ms())
        try:
            conv, created = await service.create_conversation(
                admin, ConversationKind(args.kind), ids[1:], args.title
            )
        except TidingsError as exc:
            raise OperatorError(f"cannot create the conversation: {exc.message}") from exc
    print(
        msgspec.json.encode({"conversation_id": conv.conversation_id, "created": created}).decode()
    )
    return 0
