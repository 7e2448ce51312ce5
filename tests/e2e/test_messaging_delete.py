"""Delete for everyone end to end (issue: messaging): the deleted text is gone
from every answer of the API and from the bytes of every file the server
keeps; who may delete (author, group admin, moderator) and who may not."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.e2e.messaging_wire import history, last_seq, refused, send, sent, sync, view
from tests.wire import WAIT_S, Http, Raw

LONG_TEXT_CHARS = 5000
"""Larger than a 4 KiB page: the text spills onto SQLite overflow pages."""


def long_text(marker: str) -> str:
    """About LONG_TEXT_CHARS characters, the marker in every chunk of it (so
    that a leftover overflow page, or a piece of one, still holds it)."""
    chunks: list[str] = []
    i = 0
    while sum(len(c) + 1 for c in chunks) < LONG_TEXT_CHARS:
        chunks.append(f"{marker}:{i:04d}")
        i += 1
    return " ".join(chunks)[:LONG_TEXT_CHARS]


def data_files(data_dir: Path, pattern: str = "*") -> list[Path]:
    """Every file under ``data_dir`` (recursively) matching ``pattern``."""
    return [path for path in sorted(data_dir.rglob(pattern)) if path.is_file()]


async def search_index_followed(server: RunningServer) -> None:
    """Wait (bounded) until the search indexer has handled every stored change:
    the index, a copy of the texts, follows deletes after the fact, not in
    the delete's transaction (docs/architecture.md, "Search")."""
    store = server.node.store
    head = (await store.changes_after(0, 1)).head
    for _ in range(int(WAIT_S / 0.02)):
        if await store.consumer_position("search") >= head:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the search indexer did not reach the stream's head")


def files_holding(data_dir: Path, needle: str) -> list[str]:
    """Every file under ``data_dir`` (recursively) whose bytes hold ``needle``."""
    found: list[str] = []
    raw = needle.encode()
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and raw in path.read_bytes():
            found.append(path.name)
    return found


async def test_deleted_text_is_nowhere_in_the_api_nor_in_the_files(
    tidings_server: RunningServer, backend: str
) -> None:
    """On PostgreSQL the files are the database server's (docs/operations.md
    says when vacuum frees a deleted row's bytes): there the API is checked;
    on the embedded store, every file of the data directory too."""
    embedded = backend == "sqlite"
    data_dir = Path(tidings_server.node.settings.data_dir)
    long_marker = f"LONGGONE{uuid.uuid4().hex}"
    short_marker = f"SHORTGONE{uuid.uuid4().hex}"
    edit_marker = f"EDITGONE{uuid.uuid4().hex}"
    kept_marker = f"KEPT{uuid.uuid4().hex}"
    long = long_text(long_marker)
    assert len(long) == LONG_TEXT_CHARS
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        long_seq = await sent(a, cid, {"text": long})
        short_seq = await sent(a, cid, {"text": f"short {short_marker}"})
        edit_seq = await sent(
            a, cid, {"kind": "edit", "target": short_seq, "text": f"edited {edit_marker}"}
        )
        kept_seq = await sent(a, cid, {"text": f"kept {kept_marker}"})
        # Before the deletes, all of it is on disk (the scan is not vacuous).
        for marker in (long_marker, short_marker, edit_marker, kept_marker):
            assert not embedded or files_holding(data_dir, marker), marker
        # A's delete is acked once the text is gone from the files too.
        delete_long = await sent(a, cid, {"kind": "delete", "target": long_seq})
        delete_short = await sent(a, cid, {"kind": "delete", "target": short_seq})
        assert (long_seq, short_seq, edit_seq, kept_seq, delete_long, delete_short) == (
            1,
            2,
            3,
            4,
            5,
            6,
        )

        # Nowhere in the API: history, the current view, a sync from the start.
        stream = await history(http, b_acc, cid)
        assert [m["content"] for m in stream] == [
            {"kind": "deleted"},
            {"kind": "deleted"},
            {"kind": "edit", "target": 2, "deleted": True},
            {"text": f"kept {kept_marker}"},
            {"kind": "delete", "target": 1},
            {"kind": "delete", "target": 2},
        ]
        current = await view(http, b_acc, cid)
        assert [(e["seq"], e["deleted"], e["content"]) for e in current] == [
            (1, True, {"kind": "deleted"}),
            (2, True, {"kind": "deleted"}),
            (4, False, {"text": f"kept {kept_marker}"}),
        ]
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, _ = await sync(b, cursors={cid: 0})
        assert [m["content"] for m in msgs] == [m["content"] for m in stream]
        answers = repr((stream, current, msgs, await history(http, a_acc, cid)))
        for marker in (long_marker, short_marker, edit_marker):
            assert marker not in answers

        # Nowhere in the files: the database, its WAL, its shared memory.
        if not embedded:
            await a.close()
            await b.close()
            return
        await search_index_followed(tidings_server)
        names = [path.name for path in data_files(data_dir)]
        assert any(name.endswith(".db") for name in names), names
        for marker in (long_marker, short_marker, edit_marker):
            assert files_holding(data_dir, marker) == [], (marker, names)
        assert files_holding(data_dir, kept_marker), names
        await a.close()
        await b.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # the embedded store's own files
async def test_deleted_text_already_checkpointed_and_moved_by_page_splits_is_gone_too(
    tidings_server: RunningServer,
) -> None:
    """The text reached the database file itself (an earlier delete's
    checkpoint moved it there), then hundreds of later messages split the
    pages around it; its delete still leaves none of it in any file."""
    data_dir = Path(tidings_server.node.settings.data_dir)
    long_marker = f"LONGGONE{uuid.uuid4().hex}"
    short_marker = f"SHORTGONE{uuid.uuid4().hex}"
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        long_seq = await sent(a, cid, {"text": long_text(long_marker)})
        short_seq = await sent(a, cid, {"text": f"short {short_marker}"})
        decoy = await sent(a, cid, {"text": "decoy"})
        await sent(a, cid, {"kind": "delete", "target": decoy})
        # That delete's checkpoint copied the texts into the database file.
        assert any(name.endswith(".db") for name in files_holding(data_dir, long_marker))
        fillers = 400
        for n in range(fillers):
            await a.send(
                {
                    "type": "send",
                    "conversation_id": cid,
                    "client_msg_id": f"filler-{n}",
                    "content": {"text": f"filler {n} " + "x" * 200},
                }
            )
        acks = [await a.recv_type("ack") for _ in range(fillers)]
        assert acks[-1]["seq"] == decoy + 1 + fillers
        await sent(a, cid, {"kind": "delete", "target": long_seq})
        await sent(a, cid, {"kind": "delete", "target": short_seq})
        await search_index_followed(tidings_server)
        for marker in (long_marker, short_marker):
            assert files_holding(data_dir, marker) == [], marker
        assert files_holding(data_dir, "filler 399 " + "x" * 200)
        b, _ = await Raw.connect(session, tidings_server.ws_url, b_acc.token)
        msgs, _ = await sync(b, cursors={cid: 0}, limit=10_000)
        assert len(msgs) == decoy + 1 + fillers + 2
        assert not any(marker in repr(msgs) for marker in (long_marker, short_marker))
        await a.close()
        await b.close()


async def test_a_retried_delete_is_acked_as_a_duplicate(tidings_server: RunningServer) -> None:
    """Idempotency (docs/protocol.md): a retry with the same client_msg_id
    gets the original seq with duplicate true and stores nothing. A client
    that lost the ack of its delete retries it: the target is deleted by now
    (by that very delete), yet the retry must be acked, not refused."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        await sent(a, cid, {"text": "regret"})
        content = {"kind": "delete", "target": 1}
        delete = {"client_msg_id": "delete-1", "content": content}
        path = f"/v1/conversations/{cid}/messages"
        status, first = await http.call("POST", path, a_acc.token, delete)
        assert (status, first["seq"]) == (201, 2)
        status, body = await http.call("POST", path, a_acc.token, delete)
        assert (status, body) == (200, {**first, "duplicate": True})
        ack = await send(a, cid, content, client_msg_id="delete-1")
        assert (ack["type"], ack.get("seq"), ack.get("duplicate")) == ("ack", 2, True), ack
        assert await last_seq(http, a_acc, cid) == 2
        await a.close()


async def test_a_retried_edit_of_a_since_deleted_message_is_acked_as_a_duplicate(
    tidings_server: RunningServer,
) -> None:
    """An edit stored, its ack lost, its target deleted meanwhile: the retry
    of the edit is a duplicate of what is stored, not a new edit to judge."""
    async with aiohttp.ClientSession() as session:
        http = Http(session, tidings_server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, _ = await Raw.connect(session, tidings_server.ws_url, a_acc.token)
        await sent(a, cid, {"text": "typo"})
        edit = {"client_msg_id": "edit-1", "content": {"kind": "edit", "target": 1, "text": "x"}}
        path = f"/v1/conversations/{cid}/messages"
        status, first = await http.call("POST", path, a_acc.token, edit)
        assert (status, first["seq"]) == (201, 2)
        assert await sent(a, cid, {"kind": "delete", "target": 1}) == 3
        status, body = await http.call("POST", path, a_acc.token, edit)
        assert (status, body) == (200, {**first, "duplicate": True})
        assert await last_seq(http, a_acc, cid) == 3
        await a.close()


async def test_who_may_delete_for_everyone(server_factory: ServerFactory) -> None:
    """The author, a group admin and a moderator (Settings.moderators, by
    username) may delete; another member may not; membership events stay."""
    moderator_name = f"mod{uuid.uuid4().hex[:12]}"
    server = await server_factory(moderators=f"someone_else, {moderator_name.upper()}")
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        admin_acc, b_acc, c_acc = await http.account(), await http.account(), await http.account()
        mod_acc = await http.account(moderator_name)
        cid = await http.conversation(admin_acc, "group", [b_acc, c_acc, mod_acc])
        admin, _ = await Raw.connect(session, server.ws_url, admin_acc.token)
        b, _ = await Raw.connect(session, server.ws_url, b_acc.token)
        c, _ = await Raw.connect(session, server.ws_url, c_acc.token)
        mod, _ = await Raw.connect(session, server.ws_url, mod_acc.token)
        one = await sent(b, cid, {"text": "one"})
        two = await sent(b, cid, {"text": "two"})
        three = await sent(b, cid, {"text": "three"})
        four = await sent(c, cid, {"text": "four"})

        # A plain member may not delete another's message, over either transport.
        assert await refused(c, cid, {"kind": "delete", "target": one}) == "forbidden"
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/messages",
            c_acc.token,
            {"client_msg_id": "c-del", "content": {"kind": "delete", "target": one}},
        )
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert await last_seq(http, b_acc, cid) == four

        await sent(admin, cid, {"kind": "delete", "target": one})  # a group admin
        await sent(mod, cid, {"kind": "delete", "target": two})  # a moderator
        await sent(b, cid, {"kind": "delete", "target": three})  # the author
        deleted = {e["seq"] for e in await view(http, c_acc, cid) if e["deleted"]}
        assert deleted == {one, two, three}
        # A deleted message takes no more reactions, edits or deletes.
        reaction = {"kind": "reaction", "target": one, "emoji": "👍", "on": True}
        assert await refused(c, cid, reaction) == "forbidden"
        assert await refused(b, cid, {"kind": "edit", "target": three, "text": "x"}) == "forbidden"
        assert await refused(admin, cid, {"kind": "delete", "target": two}) == "forbidden"
        assert await last_seq(http, b_acc, cid) == four + 3

        # A membership event is not deleted, not even by the admin.
        status, body = await http.call(
            "POST",
            f"/v1/conversations/{cid}/members",
            admin_acc.token,
            {"user_ids": [(await http.account()).user_id]},
        )
        assert status == 200, body
        added = body["message"]["seq"]
        assert await refused(admin, cid, {"kind": "delete", "target": added}) == "forbidden"
        assert await last_seq(http, b_acc, cid) == added
        for conn in (admin, b, c, mod):
            await conn.close()
