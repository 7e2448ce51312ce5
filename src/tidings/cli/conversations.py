"""``tidings conversation create``: a conversation between existing users,
announced on the configured bus as the API announces one (cli/services.py)."""

from __future__ import annotations

import argparse

import msgspec

from tidings.cli.errors import OperatorError
from tidings.cli.services import using_services
from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.models import ConversationKind, Device
from tidings.settings import Settings


async def create(args: argparse.Namespace, settings: Settings) -> int:
    async with using_services(settings) as services:
        ids = [(await services.find(name)).user_id for name in [args.creator, *args.members]]
        admin = Device("cli", ids[0], "cli", now_ms())
        try:
            conv, created = await services.chat.create_conversation(
                admin, ConversationKind(args.kind), ids[1:], args.title
            )
        except TidingsError as exc:
            raise OperatorError(f"cannot create the conversation: {exc.message}") from exc
    print(
        msgspec.json.encode({"conversation_id": conv.conversation_id, "created": created}).decode()
    )
    return 0
