"""The bare broadcast server that ``tidings bench --baseline`` measures Tidings against.

Why it exists: the issue's targets are ratios ("fan-out p95 at most 1.5x the
bare baseline in the same run"), so the yardstick must run on the same
machine, in the same run, on the same WebSocket library (aiohttp) and speak
frames of the same shape, so that one load generator drives both. What it
leaves out is exactly what Tidings adds: authentication, persistence, acks
after durability, cursors, receipts, rate limits.

It is written the way a competent engineer would write a minimal aiohttp chat
server, not as a straw man: the message is serialised once and the same bytes
are written to every member (``send_frame``, no per-recipient encoding), the
content is passed through as raw JSON, uvloop runs the loop, and the access log
is off.

Frames (JSON text frames with a ``type``, as in Tidings' protocol):

- ``hello`` (anything else in it is ignored) -> ``welcome``;
- ``join`` {``room``, ``id``?} -> ``joined`` {``room``, ``id``};
- ``send`` {``room`` (or ``conversation_id``), ``client_msg_id``, ``content``, ``id``?}
  -> ``ack`` to the sender and one ``msg`` to every other member of the room;
- ``ping`` -> ``pong``; ``delivered``, ``read`` and ``typing`` are accepted and ignored;
- anything else -> ``error`` {``code``: ``unknown_type`` / ``bad_frame``}.

Run: ``python -m tidings_tools.bench.baseline --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import time

import msgspec
from aiohttp import WSMsgType, web

# Listen backlog: the `connections` scenario opens thousands of sockets at
# once; aiohttp's default of 128 would make connect_per_s measure SYN retries.
LISTEN_BACKLOG = 4096
# Largest frame accepted; the same default as Tidings' max_frame_bytes.
MAX_FRAME_BYTES = 1024 * 1024
# Advertised to clients in `welcome` (the baseline never closes idle sockets).
HEARTBEAT_MS = 25_000
# How long shutdown waits for open connections before giving up.
SHUTDOWN_TIMEOUT_S = 5.0


class ClientFrame(msgspec.Struct, frozen=True):
    """Every client frame in one flat struct: one decode, no per-type dispatch cost."""

    type: str
    id: str | None = None
    room: str | None = None
    conversation_id: str | None = None
    client_msg_id: str | None = None
    # Passed through undecoded. (A Raw field cannot be optional; empty means absent.)
    content: msgspec.Raw = msgspec.Raw(b"")


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    user_id: str
    device_id: str
    session_id: str
    epoch: str
    heartbeat_ms: int
    server_time: int


class Joined(msgspec.Struct, tag="joined", tag_field="type"):
    room: str
    id: str | None


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    id: str | None
    client_msg_id: str
    conversation_id: str
    seq: int
    message_id: str
    ts: int
    duplicate: bool


class Msg(msgspec.Struct, tag="msg", tag_field="type"):
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str
    ts: int
    content: msgspec.Raw


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    id: str | None


class Error(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str
    ref: str | None
    retryable: bool


_decoder = msgspec.json.Decoder(ClientFrame)
_encoder = msgspec.json.Encoder()
# Frame types a real client sends that the baseline accepts without doing anything.
_IGNORED_TYPES = frozenset({"delivered", "read", "typing", "presence"})


class Room:
    """Members of one room and its message counter (so `msg` frames carry a seq)."""

    __slots__ = ("members", "seq")

    def __init__(self) -> None:
        self.members: set[web.WebSocketResponse] = set()
        self.seq = 0


class Baseline:
    """The whole server state: rooms by name. One process, one event loop, no locks."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self._session_ids = itertools.count(1)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            compress=False, max_msg_size=MAX_FRAME_BYTES, decode_text=False, autoping=True
        )
        await ws.prepare(request)
        session = f"s{next(self._session_ids)}"
        joined: list[Room] = []
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                    await self._handle(ws, session, joined, message.data)
        finally:
            for room in joined:
                room.members.discard(ws)
        return ws

    async def _handle(
        self, ws: web.WebSocketResponse, session: str, joined: list[Room], data: bytes
    ) -> None:
        try:
            frame = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await _send(ws, Error("bad_frame", "frame is not a valid object", None, False))
            return
        kind = frame.type
        if kind == "send":
            await self._send_message(ws, session, frame)
        elif kind in _IGNORED_TYPES:
            return
        elif kind == "ping":
            await _send(ws, Pong(frame.id))
        elif kind == "join" and frame.room is not None:
            room = self.rooms.setdefault(frame.room, Room())
            room.members.add(ws)
            joined.append(room)
            await _send(ws, Joined(frame.room, frame.id))
        elif kind == "hello":
            now = time.time_ns() // 1_000_000
            await _send(ws, Welcome(session, session, session, "baseline", HEARTBEAT_MS, now))
        else:
            await _send(ws, Error("unknown_type", f"unknown frame {kind[:64]!r}", frame.id, False))

    async def _send_message(
        self, ws: web.WebSocketResponse, session: str, frame: ClientFrame
    ) -> None:
        name = frame.room or frame.conversation_id
        room = self.rooms.get(name) if name else None
        if room is None or ws not in room.members or name is None:
            await _send(ws, Error("not_member", "join the room first", frame.id, False))
            return
        if frame.client_msg_id is None or not frame.content:
            await _send(ws, Error("bad_frame", "send needs client_msg_id and content", None, False))
            return
        room.seq += 1
        seq = room.seq
        ts = time.time_ns() // 1_000_000
        message_id = f"{name}:{seq}"
        # Serialise once; every recipient gets the same bytes.
        data = _encoder.encode(
            Msg(name, seq, message_id, session, frame.client_msg_id, ts, frame.content)
        )
        await _send(ws, Ack(frame.id, frame.client_msg_id, name, seq, message_id, ts, False))
        for member in tuple(room.members):
            if member is not ws and not member.closed:
                # Returns at once unless that socket's write buffer is over its
                # limit; then it waits for that peer, as a plain aiohttp server does.
                await member.send_frame(data, WSMsgType.TEXT)


async def _send(ws: web.WebSocketResponse, frame: msgspec.Struct) -> None:
    if not ws.closed:
        await ws.send_frame(_encoder.encode(frame), WSMsgType.TEXT)


def build_app() -> web.Application:
    """The aiohttp application: GET /healthz and the WebSocket at GET /v1/ws."""
    server = Baseline()
    app = web.Application()
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/v1/ws", server.websocket)
    return app


async def serve(host: str, port: int, fd: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT, on `host`:`port` or on an inherited listening socket."""
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site: web.BaseSite
    if fd is not None:
        sock = socket.socket(fileno=fd)
        site = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
    else:
        site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tidings_tools.bench.baseline", description="Bare aiohttp broadcast server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--fd", type=int, help="serve on this inherited listening socket (ignores --host/--port)"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(args.host, args.port, args.fd))
    else:
        uvloop.run(serve(args.host, args.port, args.fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
