"""The push feature's PostgreSQL backend, on the store's pool
(``FeatureContext.database``). ``claim_due`` locks the rows it claims with
``FOR UPDATE SKIP LOCKED``, so dispatchers on several nodes share the work and
never claim the same notification."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ports.store.engine import PostgresAccess
from tidings.features.push import sql
from tidings.features.push.port import Claimed, Claims, Noted, Subscription

NOTE = sql.NOTE.format(
    seq="$1::bigint",
    ts="$2::bigint",
    due="$3::bigint",
    cid="$4",
    sender="$5",
    now="$6::bigint",
    mention="($7::boolean OR m.user_id = ANY($8::text[]))",
)
DUE = sql.DUE.format(now="$1::bigint", limit="$2") + " FOR UPDATE OF ps SKIP LOCKED"
CLAIM = sql.CLAIM.format(false="false", sub="$1", cid="$2", seq="$3::bigint")
RETRY = sql.RETRY.format(
    count="$1::integer",
    mention="$2::boolean",
    since="$3::bigint",
    due="$4::bigint",
    sub="$5",
    cid="$6",
    seq="$7::bigint",
)
SUBSCRIBED = sql.SUBSCRIBED.format(ids="SELECT unnest($1::text[])")
WITHOUT_PREVIEWS = sql.WITHOUT_PREVIEWS.format(ids="SELECT unnest($1::text[])")


class PostgresPushStore:
    def __init__(self, database: PostgresAccess) -> None:
        self._db = database

    async def add_subscription(self, subscription: Subscription, limit: int) -> Subscription:
        s = subscription
        async with self._db.connection() as conn, conn.transaction():
            # One device's subscriptions change one at a time: the limit holds.
            await conn.execute("SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE", s.device_id)
            await conn.execute(
                "DELETE FROM push_subscriptions WHERE device_id = $1 AND url = $2",
                s.device_id,
                s.url,
            )
            count = await conn.fetchval(
                "SELECT count(*) FROM push_subscriptions WHERE device_id = $1", s.device_id
            )
            if count >= limit:
                raise TidingsError(
                    ErrorCode.CONFLICT, f"a device has at most {limit} push subscriptions"
                )
            await conn.execute(
                f"INSERT INTO push_subscriptions ({sql.COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *msgspec.structs.astuple(s),
            )
        return s

    async def subscriptions(self, user_id: str, device_id: str | None) -> list[Subscription]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {sql.COLUMNS} FROM push_subscriptions WHERE user_id = $1"
                " AND ($2::text IS NULL OR device_id = $2) ORDER BY created_at, subscription_id",
                user_id,
                device_id,
            )
        return [sql.subscription(row) for row in rows]

    async def remove_subscription(self, subscription_id: str, user_id: str | None) -> bool:
        async with self._db.connection() as conn:
            status = await conn.execute(
                "DELETE FROM push_subscriptions WHERE subscription_id = $1"
                " AND ($2::text IS NULL OR user_id = $2)",
                subscription_id,
                user_id,
            )
        return bool(status != "DELETE 0")

    async def without_previews(self, user_ids: Collection[str]) -> set[str]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(WITHOUT_PREVIEWS, sorted(user_ids))
        return {row[0] for row in rows}

    async def set_previews(self, user_id: str, previews: bool) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO push_prefs (user_id, previews) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO UPDATE SET previews = excluded.previews",
                user_id,
                previews,
            )

    async def subscribed(self, conversation_ids: Sequence[str]) -> set[str]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(SUBSCRIBED, list(conversation_ids))
        return {row[0] for row in rows}

    async def note_messages(self, messages: Sequence[Noted], delay_ms: int, now: int) -> int:
        counted = 0
        async with self._db.connection() as conn, conn.transaction():
            for m in messages:
                status = await conn.execute(
                    NOTE,
                    m.seq,
                    m.ts,
                    m.ts + delay_ms,
                    m.conversation_id,
                    m.sender_id,
                    now,
                    m.mention_all,
                    sorted(m.mentions),
                )
                counted += int(status.rsplit(" ", 1)[-1])
        return counted

    async def next_due(self) -> int | None:
        async with self._db.connection() as conn:
            due = await conn.fetchval(sql.NEXT_DUE)
        return None if due is None else int(due)

    async def claim_due(self, now: int, limit: int) -> Claims:
        send: list[Claimed] = []
        dropped = 0
        async with self._db.connection() as conn, conn.transaction():
            rows = await conn.fetch(DUE, now, limit)
            await conn.executemany(
                CLAIM, [(row["subscription_id"], row["conversation_id"], row[2]) for row in rows]
            )
        for row in rows:
            if row["seen"]:
                dropped += 1
                continue
            sub_id, cid, seq, count, mention, since, attempts, *rest = row
            subscription = sql.subscription((sub_id, *rest[:-1]))
            send.append(Claimed(subscription, cid, seq, count, mention, since, attempts))
        return Claims(send, dropped)

    async def retry_later(self, claimed: Claimed, due_at: int) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                RETRY,
                claimed.count,
                claimed.mention,
                claimed.since,
                due_at,
                claimed.subscription.subscription_id,
                claimed.conversation_id,
                claimed.seq,
            )

    async def vapid_key(self, make: str) -> str:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO push_vapid (singleton, private_pem) VALUES (1, $1)"
                " ON CONFLICT (singleton) DO NOTHING",
                make,
            )
            return str(await conn.fetchval("SELECT private_pem FROM push_vapid"))
