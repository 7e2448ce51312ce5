"""Durability: acknowledged means stored, across SIGKILL, backup and restore."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import make_settings, start_server
from tests.procs import free_port, run_tidings, spawn_server
from tests.wire import WAIT_S, Http, Raw

SENDERS = 10
PER_SENDER = 200


async def test_sigkill_mid_traffic_loses_no_acknowledged_message(tmp_path: Path) -> None:
    port = free_port()
    proc = await spawn_server(tmp_path / "data", port)
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/ws"
    acked: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, base)
            accounts = [await http.account() for _ in range(SENDERS)]
            cid = await http.conversation(accounts[0], "group", accounts[1:])
            conns = [(await Raw.connect(session, ws_url, a.token))[0] for a in accounts]
            killed = asyncio.Event()

            async def pump(i: int, conn: Raw) -> None:
                for n in range(PER_SENDER):
                    cmid = f"{i}-{n}"
                    try:
                        await conn.send(
                            {
                                "type": "send",
                                "conversation_id": cid,
                                "client_msg_id": cmid,
                                "content": {"text": cmid},
                            }
                        )
                        while True:
                            frame = await conn.recv()
                            if frame["type"] == "ack":
                                acked[frame["client_msg_id"]] = frame["seq"]
                                break
                            if frame["type"] == "_closed":
                                return
                    except (aiohttp.ClientError, ConnectionError, TimeoutError):
                        return
                    if len(acked) >= SENDERS * PER_SENDER // 4 and not killed.is_set():
                        killed.set()
                        proc.send_signal(signal.SIGKILL)

            await asyncio.gather(*(pump(i, c) for i, c in enumerate(conns)))
            assert killed.is_set()
            await asyncio.wait_for(proc.wait(), WAIT_S)
            assert proc.returncode == -signal.SIGKILL

        proc = await spawn_server(tmp_path / "data", port)
        async with aiohttp.ClientSession() as session:
            http = Http(session, base)
            reader = await http.login(accounts[1].username)
            stored: dict[str, int] = {}
            after = 0
            while True:
                status, body = await http.call(
                    "GET",
                    f"/v1/conversations/{cid}/messages?after_seq={after}&limit=200",
                    reader.token,
                )
                assert status == 200
                if not body["messages"]:
                    break
                for m in body["messages"]:
                    stored[m["client_msg_id"]] = m["seq"]
                after = body["messages"][-1]["seq"]
            # Every acknowledged message survived, at the seq its ack gave.
            assert {k: stored.get(k) for k in acked} == acked
            # Seqs are gap-free from 1 (some unacked sends may also have landed).
            assert sorted(stored.values()) == list(range(1, len(stored) + 1))
            print(f"\nacked before SIGKILL: {len(acked)}; stored: {len(stored)}")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), WAIT_S)


async def _send(conn: Raw, cid: str, cmid: str) -> dict[str, Any]:
    await conn.send(
        {"type": "send", "conversation_id": cid, "client_msg_id": cmid, "content": {"text": cmid}}
    )
    return await conn.recv_type("ack")


async def test_backup_restore_gives_a_new_epoch_and_dedupes_resends(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data)
    server = await start_server(settings)
    backup = tmp_path / "t1.db"
    async with aiohttp.ClientSession() as session:
        http = Http(session, server.http_url)
        a_acc, b_acc = await http.account(), await http.account()
        cid = await http.conversation(a_acc, "direct", [b_acc])
        a, welcome = await Raw.connect(session, server.ws_url, a_acc.token)
        old_epoch = welcome["epoch"]
        for n in range(1, 6):
            assert (await _send(a, cid, f"m{n}"))["seq"] == n
        # T1: an online backup (the CLI, against the live database).
        code, err = await run_tidings("backup", str(backup), "--data-dir", str(data))
        assert code == 0, err
        for n in range(6, 9):
            assert (await _send(a, cid, f"m{n}"))["seq"] == n
        await a.close()
    await server.stop()

    with sqlite3.connect(backup) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    code, err = await run_tidings("restore", "--from", str(backup), "--data-dir", str(data))
    assert code == 0, err

    server = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, server.http_url)
            a, welcome = await Raw.connect(session, server.ws_url, a_acc.token)
            assert welcome["epoch"] != old_epoch  # clients learn history was rolled back
            await a.send({"type": "sync", "id": "s", "cursors": {cid: 8}})
            done_frame = await a.recv_type("sync_done")
            (state,) = done_frame["conversations"]
            assert state["last_seq"] == 5  # the gap 6..8 is visible to the client
            # The client resends everything it holds above 5, and one older one:
            # the old one is recognised, the lost ones are stored again once.
            old = await _send(a, cid, "m3")
            assert (old["seq"], old["duplicate"]) == (3, True)
            resent = [await _send(a, cid, f"m{n}") for n in range(6, 9)]
            assert [(r["seq"], r["duplicate"]) for r in resent] == [
                (6, False),
                (7, False),
                (8, False),
            ]
            again = await _send(a, cid, "m7")
            assert (again["seq"], again["duplicate"]) == (7, True)
            assert (await _send(a, cid, "m9"))["seq"] == 9  # chatting goes on
            await a.close()
    finally:
        await server.stop()
