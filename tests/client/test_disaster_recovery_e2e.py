"""The disaster-recovery flow end to end (docs/reliability.md, "Disaster
recovery"): two ResilientClients chat, `tidings backup`, both chat on, the
server is restored from the backup with `tidings restore --from`, and then

- each session gets the ``restored`` notice after ``welcome``;
- each client resends its own lost messages under their original
  client_msg_id, so the server's history holds each exactly once;
- a client shows the other's lost messages as "not on the server" until
  their sender's device resends them;
- `tidings restore report --json` lists what the devices reported.

Bob's device stays offline until Alice's has finished, so Alice's view of
his lost message is observable. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.client.test_resilient_e2e import FAST, WAIT_S
from tests.conftest import RunningServer, make_settings, start_server
from tests.procs import node_env
from tests.wire import Account, Http, poll
from tidings_client import (
    AppEvent,
    EpochChanged,
    MessageSent,
    Notice,
    ResilientClient,
)


async def tidings(*args: str) -> str:
    """Run the ``tidings`` command; its standard output (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        *args,
        env=node_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S * 3)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def events_until(
    client: ResilientClient, done: Callable[[list[AppEvent]], bool]
) -> list[AppEvent]:
    """The client's events until ``done`` holds for them, bounded by WAIT_S."""
    seen: list[AppEvent] = []
    async with asyncio.timeout(WAIT_S):
        while not done(seen):
            seen.append(await client.next_event(timeout=WAIT_S))
    return seen


def sent(events: list[AppEvent]) -> set[str]:
    return {e.client_msg_id for e in events if isinstance(e, MessageSent)}


def client(server: RunningServer, account: Account, db: Path) -> ResilientClient:
    return ResilientClient(server.ws_url, account.token, db_path=str(db), config=FAST)


async def server_history(server: RunningServer, reader: Account, cid: str) -> list[str]:
    async with aiohttp.ClientSession() as session:
        status, body = await Http(session, server.http_url).call(
            "GET", f"/v1/conversations/{cid}/messages?limit=200", reader.token
        )
    assert status == 200, body
    return [m["client_msg_id"] for m in body["messages"]]


async def test_restore_notice_resend_not_on_server_and_report(tmp_path: Path) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup.db"
    a_db, b_db = tmp_path / "alice.db", tmp_path / "bob.db"
    settings = make_settings(data)
    server = await start_server(settings)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, server.http_url)
            alice, bob = await http.account(), await http.account()
            cid = await http.conversation(alice, "direct", [bob])
        async with client(server, alice, a_db) as a, client(server, bob, b_db) as b:
            a.send(cid, "a1", "a1")
            await poll(lambda: b.cursors.get(cid) == 1 and a.cursors.get(cid) == 1, WAIT_S)
            b.send(cid, "b1", "b1")
            await poll(lambda: a.cursors.get(cid) == 2 and b.cursors.get(cid) == 2, WAIT_S)
            taken = msgspec.json.decode(
                await tidings("backup", str(backup), "--data-dir", str(data))
            )
            for cmid in ("a2", "a3"):
                a.send(cid, cmid, cmid)
            b.send(cid, "b2", "b2")
            await poll(lambda: a.cursors.get(cid) == 5 and b.cursors.get(cid) == 5, WAIT_S)
            lost_b2 = b.store.messages(cid, after_seq=2)
        (b2_id,) = [m.message_id for m in lost_b2 if m.client_msg_id == "b2"]
    finally:
        await server.stop()

    restored = msgspec.json.decode(
        await tidings("restore", "--from", str(backup), "--data-dir", str(data))
    )
    assert restored["from_ts"] == taken["taken_at"]  # the copy's stamp
    server = await start_server(settings)
    try:
        # Alice's device comes back first; Bob's is still off.
        async with client(server, alice, a_db) as a:
            events = await events_until(
                a,
                lambda seen: (
                    {"a2", "a3"} <= sent(seen) and any(isinstance(e, Notice) for e in seen)
                ),
            )
            (notice,) = [e for e in events if isinstance(e, Notice)]
            assert notice.code == "restored"
            assert (notice.from_ts, notice.to_ts) == (restored["from_ts"], restored["to_ts"])
            assert a.notice == notice
            (changed,) = [e for e in events if isinstance(e, EpochChanged)]
            (lost,) = changed.lost
            assert set(lost.resent) == {"a2", "a3"}
            assert lost.not_on_server == (b2_id,)
            # Bob's lost message stays visible, marked: not on the server.
            assert [m.client_msg_id for m in a.not_on_server(cid)] == ["b2"]

            async with client(server, bob, b_db) as b:
                events = await events_until(b, lambda seen: "b2" in sent(seen))
                assert any(isinstance(e, Notice) for e in events)
                # Bob's device resent b2, so Alice's copy is on the server again,
                # and Alice's resends reached Bob.
                await poll(lambda: a.not_on_server(cid) == [], WAIT_S)
                await poll(lambda: b.not_on_server(cid) == [], WAIT_S)
                reports: list[Any] = []

                async def both_reported() -> None:
                    while len(reports) < 2:
                        reports[:] = await server.node.store.reconcile_reports(restored["epoch"])
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(both_reported(), WAIT_S)

        history = await server_history(server, alice, cid)
        assert sorted(history) == ["a1", "a2", "a3", "b1", "b2"]  # each exactly once
        assert history[:2] == ["a1", "b1"]

        report = msgspec.json.decode(
            await tidings("restore", "report", "--json", "--data-dir", str(data))
        )
        assert (report["epoch"], report["from_ts"]) == (restored["epoch"], restored["from_ts"])
        assert report["devices_reporting"] == 2
        (row,) = report["conversations"]
        # Alice held up to 5 against the restored 2; own: a2, a3 (Alice) and
        # b2 (Bob); the most others' messages one device held: a2, a3 at Bob's.
        assert row == {
            "conversation_id": cid,
            "devices": 2,
            "largest_gap": 3,
            "own": 3,
            "others": 2,
        }
        text = await tidings("restore", "report", "--data-dir", str(data))
        assert "devices reporting: 2" in text
        assert cid in text
    finally:
        await server.stop()
