"""The dispatcher: claims due notifications and sends them, each in a task of
its own, at most ``concurrency`` at a time per node.

A send never blocks another: a webhook that hangs holds one slot until its
``timeout_s`` and nothing else, and no message waits for any of it (the
notifier and the dispatcher both run beside the send path). Claims are made in
the store (``PushStore.claim_due``), so dispatchers on every node of a cluster
share the work without sending anything twice.

**At most once per (subscription, seq).** A claim moves the subscription's
``notified_seq`` before the request goes out. A send that fails in a way worth
retrying is put back with a backoff (doubling from ``retry_base_ms`` to
``retry_max_ms``, ±50% jitter, at least the endpoint's ``Retry-After``); a node
killed while a request is in flight does not resend it. A duplicate
notification is noise on someone's lock screen; a lost one costs nothing that
the next open of the app (a sync) does not bring back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
from concurrent.futures import ThreadPoolExecutor

import msgspec

from tidings.core.content_kinds import ContentKinds
from tidings.core.errors import TidingsError
from tidings.core.ids import now_ms
from tidings.core.loop import stop_task
from tidings.core.models import Message
from tidings.core.ports.store.messages import MessageLog
from tidings.features.push.delivery import Outcome, Poster, Result
from tidings.features.push.metrics import PushMetrics
from tidings.features.push.port import Claimed, PushStore
from tidings.features.push.settings import PushSettings
from tidings.features.push.webpush import Signer, encrypt, topic

log = logging.getLogger("tidings.push")


class Notification(
    msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="message"
):
    """What a device is told (the webhook's body; Web Push's decrypted payload)."""

    conversation_id: str
    seq: int
    sender_id: str
    count: int
    mention: bool = False
    preview: str | None = None


_encode = msgspec.json.Encoder().encode


def signature(secret: str, body: bytes) -> str:
    """``X-Tidings-Signature``: HMAC-SHA256 of the raw body, keyed with the secret's UTF-8."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Dispatcher:
    def __init__(
        self,
        store: PushStore,
        messages: MessageLog,
        kinds: ContentKinds,
        posters: dict[str, Poster],
        signer: Signer,
        settings: PushSettings,
        metrics: PushMetrics,
    ) -> None:
        self._store = store
        self._messages = messages
        self._kinds = kinds
        self._posters = posters
        self._signer = signer
        self._settings = settings
        self._metrics = metrics
        self._wakeup = asyncio.Event()
        # Encrypting a Web Push payload costs a key agreement per notification
        # (docs/benchmarks.md, "Figures behind design choices"); on the event
        # loop a burst to a large group would hold every connection's messages
        # back. cryptography releases the GIL while it works, so one thread
        # takes the work off the loop.
        self._crypto = ThreadPoolExecutor(1, thread_name_prefix="tidings-push-crypto")
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for due notifications now rather than at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        for poster in self._posters.values():
            await poster.close()
        self._crypto.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        poll_s = self._settings.poll_ms / 1000
        while True:
            wait_s = poll_s
            try:
                wait_s = await self.dispatch_due()
            except TidingsError as exc:
                log.warning("push dispatch failed; retrying: %s", exc)
            except Exception:
                log.exception("push dispatch failed; retrying at the next poll")
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), min(wait_s, poll_s))

    async def dispatch_due(self) -> float:
        """Claim what is due and start sending it; seconds until worth looking again."""
        free = self._settings.concurrency - len(self._sending)
        if free <= 0:
            return self._settings.poll_ms / 1000
        due = await self._store.next_due()
        now = now_ms()
        if due is None or due > now:
            return self._settings.poll_ms / 1000 if due is None else (due - now) / 1000
        claims = await self._store.claim_due(now, free)
        self._metrics.skipped.inc(claims.dropped)
        try:
            told = await self._notifications(claims.send)
        except Exception:
            for claimed in claims.send:  # nothing went out: put every claim back
                await self._store.retry_later(claimed, now_ms() + self._settings.retry_base_ms)
            raise
        for claimed, notification in zip(claims.send, told, strict=True):
            task = asyncio.create_task(self._deliver(claimed, notification))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return 0.0 if len(claims.send) == free else self._settings.poll_ms / 1000

    async def _deliver(self, claimed: Claimed, notification: Notification) -> None:
        try:
            outcome = await self._send(claimed, _encode(notification))
            await self._settle(claimed, outcome)
        except Exception as exc:
            # A TidingsError says what went wrong; anything else needs its traceback.
            log.warning(
                "push to %s failed: %s",
                claimed.subscription.subscription_id,
                exc,
                exc_info=not isinstance(exc, TidingsError),
            )
            self._metrics.failed.labels("error").inc()

    async def _notifications(self, claims: list[Claimed]) -> list[Notification]:
        """What each claim tells. A message to a large group is claimed for many
        subscriptions at once, so each message is read once, and whose users
        turned previews off in one query, for the whole batch."""
        entries: dict[tuple[str, int], Message | None] = {}
        for cid, seq in {(c.conversation_id, c.seq) for c in claims}:
            found = await self._messages.history(cid, seq - 1, seq + 1, limit=1)
            entries[(cid, seq)] = found[0] if found else None
        quiet = await self._store.without_previews({c.subscription.user_id for c in claims})
        texts = {
            key: None if m is None else self._kinds.indexable_text(m.content) or None
            for key, m in entries.items()
        }
        told: list[Notification] = []
        for c in claims:
            entry = entries[(c.conversation_id, c.seq)]
            text = None if c.subscription.user_id in quiet else texts[(c.conversation_id, c.seq)]
            told.append(
                Notification(
                    c.conversation_id,
                    c.seq,
                    "" if entry is None else entry.sender_id,
                    c.count,
                    c.mention,
                    None if text is None else text[: self._settings.preview_chars],
                )
            )
        return told

    async def _send(self, claimed: Claimed, body: bytes) -> Outcome:
        sub = claimed.subscription
        delivery = f"{sub.subscription_id}:{claimed.conversation_id}:{claimed.seq}"
        if sub.kind == "webhook":
            headers = {
                "Content-Type": "application/json",
                "X-Tidings-Signature": signature(sub.secret or "", body),
                "X-Tidings-Delivery": delivery,
            }
            return await self._posters["webhook"].post(sub.url, body, headers)
        headers = {
            "Authorization": self._signer.authorization(sub.url),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._settings.ttl_s),
            "Urgency": "high" if claimed.mention else "normal",
            "Topic": topic(claimed.conversation_id),
        }
        loop = asyncio.get_running_loop()
        sealed = await loop.run_in_executor(self._crypto, encrypt, sub, body)
        return await self._posters["webpush"].post(sub.url, sealed, headers)

    async def _settle(self, claimed: Claimed, outcome: Outcome) -> None:
        sub = claimed.subscription
        metrics = self._metrics
        if outcome.result is Result.SENT:
            metrics.sent.labels(sub.kind).inc()
            metrics.collapsed.inc(claimed.count - 1)
            metrics.latency.observe(max(0, now_ms() - claimed.since) / 1000)
            return
        if outcome.result is Result.GONE:
            await self._store.remove_subscription(sub.subscription_id, None)
            metrics.removed.labels("gone").inc()
            log.info("push subscription %s is gone (%s): removed", sub.subscription_id, outcome)
            return
        attempts = claimed.attempts + 1
        if outcome.result is Result.RETRY and attempts < self._settings.max_attempts:
            metrics.failed.labels("retried").inc()
            await self._store.retry_later(claimed, now_ms() + self._backoff_ms(attempts, outcome))
            return
        metrics.failed.labels("gave_up" if outcome.result is Result.RETRY else "refused").inc()
        log.warning(
            "push to %s given up after %d attempt(s): %s",
            sub.subscription_id,
            attempts,
            outcome.detail,
        )

    def _backoff_ms(self, attempts: int, outcome: Outcome) -> int:
        s = self._settings
        base = min(s.retry_max_ms, s.retry_base_ms * 2 ** (attempts - 1))
        delay = base * random.uniform(0.5, 1.5)
        if outcome.retry_after_s is not None:
            delay = max(delay, outcome.retry_after_s * 1000)
        return int(min(delay, s.retry_max_ms))
