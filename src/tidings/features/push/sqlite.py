"""The push feature's SQLite backend: its statements run on the store's writer
(writes) and readers (listings), through ``FeatureContext.database``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence

import msgspec

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.store.engine import SqliteAccess
from tidings.features.push import sql
from tidings.features.push.port import Claimed, Claims, Noted, Subscription

_NAMES = ("seq", "ts", "due", "cid", "sender", "now", "limit", "sub", "count", "since")
_P = {name: f":{name}" for name in _NAMES}
_MENTION = "(:mention_all OR m.user_id IN (SELECT value FROM json_each(:mentions)))"
NOTE = sql.NOTE.format(**_P, mention=_MENTION)
DUE = sql.DUE.format(**_P)
CLAIM = sql.CLAIM.format(**_P, false="0")
RETRY = sql.RETRY.format(**_P, mention=":mention")


class SqlitePushStore:
    def __init__(self, database: SqliteAccess) -> None:
        self._db = database

    async def add_subscription(self, subscription: Subscription, limit: int) -> Subscription:
        s = subscription

        def op(conn: sqlite3.Connection) -> Subscription:
            conn.execute(
                "DELETE FROM push_subscriptions WHERE device_id = ? AND url = ?",
                (s.device_id, s.url),
            )
            (count,) = conn.execute(
                "SELECT count(*) FROM push_subscriptions WHERE device_id = ?", (s.device_id,)
            ).fetchone()
            if count >= limit:
                raise TidingsError(
                    ErrorCode.CONFLICT, f"a device has at most {limit} push subscriptions"
                )
            conn.execute(
                f"INSERT INTO push_subscriptions ({sql.COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                msgspec.structs.astuple(s),
            )
            return s

        return await self._db.write("push_subscribe", op)

    async def subscriptions(self, user_id: str, device_id: str | None) -> list[Subscription]:
        def op(conn: sqlite3.Connection) -> list[Subscription]:
            rows = conn.execute(
                f"SELECT {sql.COLUMNS} FROM push_subscriptions WHERE user_id = ?"
                " AND (? IS NULL OR device_id = ?) ORDER BY created_at, subscription_id",
                (user_id, device_id, device_id),
            )
            return [sql.subscription(row) for row in rows]

        return await self._db.read(op)

    async def remove_subscription(self, subscription_id: str, user_id: str | None) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM push_subscriptions WHERE subscription_id = ?"
                " AND (? IS NULL OR user_id = ?)",
                (subscription_id, user_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._db.write("push_unsubscribe", op)

    async def without_previews(self, user_ids: Collection[str]) -> set[str]:
        ids = sorted(user_ids)
        query = sql.WITHOUT_PREVIEWS.format(ids=", ".join("?" * len(ids)))

        def op(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(query, ids)}

        return await self._db.read(op) if ids else set()

    async def set_previews(self, user_id: str, previews: bool) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO push_prefs (user_id, previews) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET previews = excluded.previews",
                (user_id, int(previews)),
            )

        await self._db.write("push_prefs", op)

    async def subscribed(self, conversation_ids: Sequence[str]) -> set[str]:
        query = sql.SUBSCRIBED.format(ids=", ".join("?" * len(conversation_ids)))

        def op(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(query, tuple(conversation_ids))}

        return await self._db.read(op)

    async def note_messages(self, messages: Sequence[Noted], delay_ms: int, now: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            counted = 0
            for m in messages:
                counted += conn.execute(
                    NOTE,
                    {
                        "seq": m.seq,
                        "ts": m.ts,
                        "due": m.ts + delay_ms,
                        "cid": m.conversation_id,
                        "sender": m.sender_id,
                        "now": now,
                        "mention_all": int(m.mention_all),
                        "mentions": json.dumps(sorted(m.mentions)),
                    },
                ).rowcount
            return counted

        return await self._db.write("push_note", op)

    async def next_due(self) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            (due,) = conn.execute(sql.NEXT_DUE).fetchone()
            return None if due is None else int(due)

        return await self._db.read(op)

    async def claim_due(self, now: int, limit: int) -> Claims:
        def op(conn: sqlite3.Connection) -> Claims:
            send: list[Claimed] = []
            dropped = 0
            for row in conn.execute(DUE, {"now": now, "limit": limit}).fetchall():
                sub_id, cid, seq, count, mention, since, attempts, *rest = row
                conn.execute(CLAIM, {"sub": sub_id, "cid": cid, "seq": seq})
                if rest[-1]:
                    dropped += 1
                    continue
                subscription = sql.subscription((sub_id, *rest[:-1]))
                send.append(Claimed(subscription, cid, seq, count, bool(mention), since, attempts))
            return Claims(send, dropped)

        return await self._db.write("push_claim", op)

    async def retry_later(self, claimed: Claimed, due_at: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                RETRY,
                {
                    "count": claimed.count,
                    "mention": int(claimed.mention),
                    "since": claimed.since,
                    "due": due_at,
                    "sub": claimed.subscription.subscription_id,
                    "cid": claimed.conversation_id,
                    "seq": claimed.seq,
                },
            )

        await self._db.write("push_retry", op)

    async def vapid_key(self, make: str) -> str:
        def op(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO push_vapid (singleton, private_pem) VALUES (1, ?)"
                " ON CONFLICT (singleton) DO NOTHING",
                (make,),
            )
            (pem,) = conn.execute("SELECT private_pem FROM push_vapid").fetchone()
            return str(pem)

        return await self._db.write("push_vapid", op)
