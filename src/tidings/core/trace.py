"""Lifecycle tracing: what happened to a message, stage by stage, recorded
without slowing the path it describes.

The send path, the fan-out, redelivery and the cursor frames call the
:class:`Tracer`'s ``record`` methods, which only append a tuple to a list on
the event loop: no await, no I/O, no lock. A background task of the trace
feature (``features/trace/``) takes the list in batches (:meth:`take`) and
writes them to the store. The list is bounded: when it is full, events are
dropped and counted (``dropped``), so a store that cannot keep up loses trace
events, never send throughput.

Which messages are traced is decided by a hash of ``(conversation_id, seq)``
(:meth:`sampled`): every node computes the same answer for the same message,
so a sampled message is complete across the cluster, and an unsampled one
costs nothing anywhere. ``(conversation_id, seq)`` rather than the message id
because the fan-out's bus event and the clients' ``delivered`` and ``read``
frames carry it and not the id.

A node with no trace feature plugged (or with it turned off) never enables
the tracer, and every hook is one attribute test.
"""

from __future__ import annotations

import time
import zlib

import msgspec

from tidings.core.models import Device, Message

NETWORKS = ("wifi", "cellular", "ethernet", "unknown")
"""The label values of ``hello.client.network`` (the codec refuses others)."""

_SPACE = 1 << 32


Row = tuple[
    str,  # conversation_id
    int,  # seq
    str,  # stage
    int,  # ts_us
    str,  # node
    str | None,  # user_id
    str | None,  # device_id
    str | None,  # network
    str | None,  # message_id
    str | None,  # client_msg_id
    int | None,  # persisted_us
    int | None,  # published_us
    int | None,  # acked_us
    str | None,  # devices
    int | None,  # attempt
]
"""One recorded stage (or, for ``send`` and ``delivered``, several), in the
column order of the trace table, so that a batch goes to the database as it
was recorded: a plain tuple, built once on the event loop (a named tuple
or a conversion at write time cost more than the rest of the recording).

``stage`` is one of:

- ``send``: ``ts_us`` is when the frame was received; ``persisted_us``,
  ``published_us`` and ``acked_us`` the later stages of the same send (one
  row for four stages: the writer pays per row);
- ``delivered``: one fan-out of the message on one node, to the devices in
  ``devices`` (a JSON array of ``[user_id, device_id, network]``) at ``ts_us``;
- ``synced``: the same, written by a ``sync`` answer;
- ``redelivered``: re-sent to one device (``attempt`` counts from 1);
- ``client_acked`` / ``read``: the device's ``delivered`` / ``read`` moved
  its cursor to ``seq``, covering every seq up to it.
"""


_NO_WHO = (None, None, None)
_NO_SEND = (None, None, None, None, None)  # message_id .. acked_us


class SendStamps:
    """When one send reached each stage (``time.time()``), filled as it goes:
    the session stamps receipt and ack, the chat service the rest."""

    __slots__ = ("persisted", "published", "received")

    def __init__(self, received: float) -> None:
        self.received = received
        self.persisted = 0.0
        self.published = 0.0


def micros(ts: float) -> int:
    return int(ts * 1_000_000)


class Tracer:
    """The node's trace buffer (see the module doc). Off until :meth:`enable`."""

    __slots__ = ("_buffer", "_capacity", "_threshold", "dropped", "node", "on", "rate")

    def __init__(self) -> None:
        self.on = False
        self.rate = 0.0
        self.node = ""
        self._threshold = 0
        self._capacity = 0
        self._buffer: list[Row] = []
        self.dropped = 0
        """Events not kept because the buffer was full (a metric of the trace feature)."""

    def enable(self, node: str, rate: float, capacity: int) -> None:
        """Trace the share ``rate`` (0 to 1) of messages as ``node``, holding at
        most ``capacity`` events between two :meth:`take`."""
        self.node = node
        self.rate = max(0.0, min(1.0, rate))
        self._threshold = int(self.rate * _SPACE)
        self._capacity = capacity
        self.on = self.rate > 0

    def sampled(self, conversation_id: str, seq: int) -> bool:
        """Whether this message is traced: the same answer on every node."""
        if not self.on:
            return False
        if self._threshold >= _SPACE:
            return True
        return zlib.crc32(b"%s:%d" % (conversation_id.encode(), seq)) < self._threshold

    def sampled_range(self, conversation_id: str, low: int, high: int) -> bool:
        """Whether any message of ``low..high`` is traced (a cursor move over
        them is worth recording). Long ranges are assumed to hold one."""
        if not self.on:
            return False
        if self._threshold >= _SPACE or high - low >= 64:
            return True
        return any(self.sampled(conversation_id, seq) for seq in range(low, high + 1))

    def add(self, row: Row) -> None:
        if len(self._buffer) >= self._capacity:
            self.dropped += 1
        else:
            self._buffer.append(row)

    def take(self) -> list[Row]:
        """Everything recorded since the last call (the flusher's batch)."""
        taken, self._buffer = self._buffer, []
        return taken

    def sent(self, message: Message, device: Device, network: str, stamps: SendStamps) -> None:
        """A send stored ``message`` and was answered (called after the ``ack``
        is written); recorded if the message is sampled."""
        if not self.sampled(message.conversation_id, message.seq):
            return
        persisted, published = stamps.persisted, stamps.published
        self.add(
            (
                message.conversation_id,
                message.seq,
                "send",
                int(stamps.received * 1e6),
                self.node,
                device.user_id,
                device.device_id,
                network,
                message.message_id,
                message.client_msg_id,
                int(persisted * 1e6) if persisted else None,
                int(published * 1e6) if published else None,
                int(time.time() * 1e6),
                None,
                None,
            )
        )

    def delivered(
        self, conversation_id: str, seq: int, devices: list[tuple[str, str, str]], via: str
    ) -> None:
        """The message was written to these devices' connections (``user_id,
        device_id, network`` each) by the fan-out (``via`` ``delivered``) or a
        sync answer (``synced``)."""
        written = msgspec.json.encode(devices).decode()
        now = int(time.time() * 1e6)
        self.add((conversation_id, seq, via, now, self.node, *_NO_WHO, *_NO_SEND, written, None))

    def redelivered(
        self,
        conversation_id: str,
        seq: int,
        user_id: str,
        device_id: str,
        network: str,
        attempt: int,
    ) -> None:
        now = int(time.time() * 1e6)
        who = (user_id, device_id, network)
        self.add(
            (conversation_id, seq, "redelivered", now, self.node, *who, *_NO_SEND, None, attempt)
        )

    def cursor_moved(
        self,
        stage: str,
        conversation_id: str,
        seq: int,
        user_id: str,
        device_id: str,
        network: str,
    ) -> None:
        """A ``delivered`` (stage ``client_acked``) or ``read`` moved a cursor to ``seq``."""
        now = int(time.time() * 1e6)
        who = (user_id, device_id, network)
        self.add((conversation_id, seq, stage, now, self.node, *who, *_NO_SEND, None, None))
