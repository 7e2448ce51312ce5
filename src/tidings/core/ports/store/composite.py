"""The whole store: every aggregate's protocol, as each engine implements it.

Only the composition root (``tidings.app``), the CLI's store access and the
tests name it; services, helpers and transports declare the narrow protocols
they use (the package docstring lists them), which import-linter checks.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.ports.store.accounts import AccountStore
from tidings.core.ports.store.announcements import AnnouncementStore
from tidings.core.ports.store.consumers import ConsumerStore
from tidings.core.ports.store.conversations import ConversationStore
from tidings.core.ports.store.cursors import CursorStore
from tidings.core.ports.store.engine import EngineAccess
from tidings.core.ports.store.hidden import HiddenStore
from tidings.core.ports.store.lifecycle import StoreLifecycle
from tidings.core.ports.store.messages import MessageLog
from tidings.core.ports.store.restores import RestoreStore
from tidings.core.ports.store.retention import RetentionStore


class Store(
    StoreLifecycle,
    AccountStore,
    ConversationStore,
    MessageLog,
    CursorStore,
    RestoreStore,
    ConsumerStore,
    HiddenStore,
    RetentionStore,
    AnnouncementStore,
    EngineAccess,
    Protocol,
):
    """Durable storage: one database behind every aggregate's protocol."""
