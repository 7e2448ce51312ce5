"""The trace feature's storage port: its rows, written in batches and read
back per message (``tidings trace``, the admin call, the delivery rate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from tidings.core.trace import Row


class TraceRow(NamedTuple):
    """A stored :data:`~tidings.core.trace.Row`, its fields named."""

    conversation_id: str
    seq: int
    stage: str
    ts_us: int
    node: str
    user_id: str | None
    device_id: str | None
    network: str | None
    message_id: str | None
    client_msg_id: str | None
    persisted_us: int | None
    published_us: int | None
    acked_us: int | None
    devices: str | None
    attempt: int | None


class DeliveryCount(NamedTuple):
    """Of the (message, device) pairs of one network in a delivery-rate window:
    how many there were and how many the device acknowledged in time."""

    network: str
    pairs: int
    acknowledged: int


class TraceStore(Protocol):
    async def write(self, rows: Sequence[Row]) -> None:
        """Store a batch of rows as recorded."""
        ...

    async def rows(self, conversation_id: str, seq: int, limit: int) -> list[TraceRow]:
        """The message's own rows and the cursor moves at or beyond it (at most
        ``limit``, earliest first)."""
        ...

    async def locate(self, identifier: str) -> list[tuple[str, int]]:
        """``(conversation_id, seq)`` of the message with this id, or of the
        traced messages sent with this client_msg_id (a client's id is unique
        per sender only)."""
        ...

    async def purge(self, before_us: int) -> int:
        """Remove the events recorded before ``before_us``; how many went."""
        ...

    async def delivery(self, since_us: int, until_us: int, within_us: int) -> list[DeliveryCount]:
        """Per network: the devices written each message acknowledged between
        ``since_us`` and ``until_us``, and those whose ``delivered`` covered it
        within ``within_us`` of its ack."""
        ...
