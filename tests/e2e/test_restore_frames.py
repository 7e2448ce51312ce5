"""The server side of disaster recovery on the wire: the ``restored`` notice
after ``welcome`` (only within ``restore_notice_s``) and the ``reconcile``
report with its errors (docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import make_settings, start_server
from tests.wire import Account, Http, Raw
from tidings.core.ids import now_ms
from tidings.store.sqlite import SqliteStore

HOUR_MS = 3_600_000


async def _record_restore(data: Path, backup_ts: int, restored_ts: int) -> None:
    """What `tidings restore` does to the store (the server is stopped)."""
    store = SqliteStore(str(data / "tidings.db"))
    await store.start()
    try:
        await store.record_restore(backup_ts, restored_ts)
    finally:
        await store.close()


async def _first_after_welcome(ws_url: str, account: Account) -> dict[str, object]:
    """The frame after welcome: a notice, or the pong of a ping sent at once."""
    async with aiohttp.ClientSession() as session:
        conn, _ = await Raw.connect(session, ws_url, account.token)
        await conn.send({"type": "ping", "id": "p"})
        frame = await conn.recv()
        await conn.close()
        return frame


async def test_notice_follows_welcome_only_within_the_period(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, restore_notice_s=3600)
    server = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as session:
            account = await Http(session, server.http_url).account()
        assert (await _first_after_welcome(server.ws_url, account))["type"] == "pong"
    finally:
        await server.stop()

    # A restore longer ago than restore_notice_s is not announced.
    restored_at = now_ms()
    await _record_restore(data, restored_at - 3 * HOUR_MS, restored_at - 2 * HOUR_MS)
    server = await start_server(settings)
    try:
        assert (await _first_after_welcome(server.ws_url, account))["type"] == "pong"
    finally:
        await server.stop()

    await _record_restore(data, restored_at - HOUR_MS, restored_at)
    server = await start_server(settings)
    try:
        notice = await _first_after_welcome(server.ws_url, account)
        assert notice["type"] == "notice"
        assert (notice["code"], notice["from_ts"], notice["to_ts"]) == (
            "restored",
            restored_at - HOUR_MS,
            restored_at,
        )
        assert isinstance(notice["text"], str)
        assert notice["text"].startswith("Messages sent between ")
        assert notice["text"].endswith(" (UTC) may have been lost.")
    finally:
        await server.stop()


async def test_reconcile_is_stored_and_bad_reports_change_nothing(tmp_path: Path) -> None:
    server = await start_server(make_settings(tmp_path / "data"))
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, server.http_url)
            alice, bob, carol = await http.account(), await http.account(), await http.account()
            cid = await http.conversation(alice, "direct", [bob])
            foreign = await http.conversation(bob, "direct", [carol])
            conn, welcome = await Raw.connect(session, server.ws_url, alice.token)
            epoch = welcome["epoch"]

            def report(rid: str, *cids: str, epoch: str = epoch) -> dict[str, object]:
                rows = [
                    {
                        "conversation_id": c,
                        "server_last_seq": 3,
                        "held_last_seq": 7,
                        "own": 1,
                        "others": 3,
                    }
                    for c in cids
                ]
                return {"type": "reconcile", "id": rid, "epoch": epoch, "conversations": rows}

            await conn.send(report("r1", cid))
            assert await conn.recv_type("reconciled") == {
                "type": "reconciled",
                "epoch": epoch,
                "conversations": 1,
                "id": "r1",
            }
            bad = [
                (report("r2", cid, foreign), "not_member"),
                (report("r3", cid, cid), "bad_frame"),
                (report("r4", cid, epoch="e_other"), "bad_frame"),
                ({**report("r5", cid), "conversations": "x"}, "bad_frame"),
            ]
            for frame, code in bad:
                await conn.send(frame)
                error = await conn.recv_type("error")
                assert (error["code"], error["ref"]) == (code, frame["id"])
            await conn.close()
        stored = await server.node.store.reconcile_reports(epoch)
        assert [(r.device_id, [g.conversation_id for g in r.gaps]) for r in stored] == [
            (alice.device_id, [cid])
        ]
    finally:
        await server.stop()
