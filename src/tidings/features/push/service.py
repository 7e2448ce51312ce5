"""The rules of subscribing: who may, to what, and how many."""

from __future__ import annotations

import asyncio
import secrets

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.ids import new_id, now_ms
from tidings.core.models import Device
from tidings.features.push.guard import GuardedResolver, Policy
from tidings.features.push.port import PushStore, Subscription, SubscriptionKind
from tidings.features.push.webpush import check_keys

RESOLVE_TIMEOUT_S = 5.0


class PushService:
    def __init__(self, store: PushStore, policies: dict[str, Policy], per_device: int) -> None:
        self._store = store
        self._policies = policies
        self._per_device = per_device

    async def _check_target(self, kind: SubscriptionKind, url: str) -> None:
        """``bad_request`` unless ``url`` is a target the allow-list admits, by its
        name and by every address it resolves to now (checked again at each send)."""
        policy = self._policies[kind]
        parsed = policy.check_url(url)
        host = parsed.raw_host or ""
        try:
            await asyncio.wait_for(
                GuardedResolver(policy).resolve(host, parsed.port or 0), RESOLVE_TIMEOUT_S
            )
        except TimeoutError:
            raise TidingsError(
                ErrorCode.BAD_REQUEST, f"push target {url}: {host} did not resolve"
            ) from None
        except OSError as exc:
            raise TidingsError(ErrorCode.BAD_REQUEST, f"push target {url} refused: {exc}") from None

    async def subscribe_webpush(
        self, device: Device, endpoint: str, p256dh: str, auth: str
    ) -> Subscription:
        check_keys(p256dh, auth)
        await self._check_target("webpush", endpoint)
        subscription = Subscription(
            new_id("ps"),
            device.user_id,
            device.device_id,
            "webpush",
            endpoint,
            p256dh,
            auth,
            created_at=now_ms(),
        )
        return await self._store.add_subscription(subscription, self._per_device)

    async def subscribe_webhook(self, device: Device, url: str) -> Subscription:
        await self._check_target("webhook", url)
        subscription = Subscription(
            new_id("ps"),
            device.user_id,
            device.device_id,
            "webhook",
            url,
            secret=secrets.token_urlsafe(32),
            created_at=now_ms(),
        )
        return await self._store.add_subscription(subscription, self._per_device)

    async def subscriptions(self, device: Device) -> list[Subscription]:
        return await self._store.subscriptions(device.user_id, None)

    async def unsubscribe(self, device: Device, subscription_id: str) -> None:
        if not await self._store.remove_subscription(subscription_id, device.user_id):
            raise TidingsError(ErrorCode.NOT_FOUND, "no such push subscription")

    async def previews(self, device: Device) -> bool:
        return device.user_id not in await self._store.without_previews([device.user_id])

    async def set_previews(self, device: Device, previews: bool) -> bool:
        await self._store.set_previews(device.user_id, previews)
        return previews
