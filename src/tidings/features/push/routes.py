"""The push routes: a device's subscriptions, the user's preview setting and
the VAPID public key browsers subscribe with."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from tidings.core.errors import ErrorCode, TidingsError
from tidings.core.frames import Id
from tidings.features.push.port import Subscription
from tidings.features.push.service import PushService
from tidings.features.push.webpush import Signer
from tidings.http.respond import json_response
from tidings.http.routes import AnyRoute, Call, NoParams, Route

E = ErrorCode
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_=-]+$")]


class WebPushKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    p256dh: Key
    auth: Key


class SubscriptionBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``webpush``: a browser's ``PushSubscription.toJSON()`` plus ``"kind"`` (its
    ``expirationTime`` is accepted and ignored); ``webhook``: a ``url``."""

    kind: Literal["webpush", "webhook"]
    endpoint: Url | None = None
    keys: WebPushKeys | None = None
    url: Url | None = None
    expirationTime: int | None = None


class Created(msgspec.Struct, frozen=True, omit_defaults=True):
    subscription_id: str
    secret: str | None = None
    """A webhook's HMAC key: shown once, here."""


class SubscriptionOut(msgspec.Struct, frozen=True):
    subscription_id: str
    kind: Literal["webpush", "webhook"]
    device_id: str
    url: str
    created_at: int


class SubscriptionsOut(msgspec.Struct, frozen=True):
    subscriptions: list[SubscriptionOut]


class SubscriptionPath(msgspec.Struct, frozen=True):
    sid: Id


class PushSettingsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    previews: bool


class VapidOut(msgspec.Struct, frozen=True):
    public_key: str
    """The ``applicationServerKey`` for ``PushManager.subscribe`` (base64url)."""


def _out(s: Subscription) -> SubscriptionOut:
    return SubscriptionOut(s.subscription_id, s.kind, s.device_id, s.url, s.created_at)


class PushRoutes:
    def __init__(self, service: PushService, signer: Signer) -> None:
        self._service = service
        self._signer = signer

    def routes(self) -> list[AnyRoute]:
        return [
            Route(
                "POST",
                "/v1/push/subscriptions",
                "Subscribe this device to push notifications (Web Push or a signed webhook)",
                self.subscribe,
                NoParams,
                SubscriptionBody,
                {201: Created},
                frozenset({E.CONFLICT, E.UNAVAILABLE}),
            ),
            Route(
                "GET",
                "/v1/push/subscriptions",
                "Your push subscriptions, on all your devices",
                self.subscriptions,
                NoParams,
                None,
                {200: SubscriptionsOut},
                frozenset({E.UNAVAILABLE}),
            ),
            Route(
                "DELETE",
                "/v1/push/subscriptions/{sid}",
                "Remove one of your push subscriptions",
                self.unsubscribe,
                SubscriptionPath,
                None,
                {204: None},
                frozenset({E.UNAVAILABLE}),
            ),
            Route(
                "GET",
                "/v1/push/settings",
                "Whether your notifications show a preview of the message",
                self.settings,
                NoParams,
                None,
                {200: PushSettingsBody},
                frozenset({E.UNAVAILABLE}),
            ),
            Route(
                "PUT",
                "/v1/push/settings",
                "Turn previews in your notifications on or off",
                self.set_settings,
                NoParams,
                PushSettingsBody,
                {200: PushSettingsBody},
                frozenset({E.UNAVAILABLE}),
            ),
            Route(
                "GET",
                "/v1/push/vapid",
                "The VAPID public key browsers subscribe with (applicationServerKey)",
                self.vapid,
                NoParams,
                None,
                {200: VapidOut},
            ),
        ]

    async def subscribe(self, call: Call[NoParams, SubscriptionBody]) -> web.Response:
        body = call.body
        if body.kind == "webpush":
            if body.endpoint is None or body.keys is None or body.url is not None:
                raise TidingsError(E.BAD_REQUEST, "a webpush subscription has endpoint and keys")
            sub = await self._service.subscribe_webpush(
                call.caller, body.endpoint, body.keys.p256dh, body.keys.auth
            )
        else:
            if body.url is None or body.endpoint is not None or body.keys is not None:
                raise TidingsError(E.BAD_REQUEST, "a webhook subscription has a url only")
            sub = await self._service.subscribe_webhook(call.caller, body.url)
        return json_response(Created(sub.subscription_id, sub.secret), 201)

    async def subscriptions(self, call: Call[NoParams, None]) -> web.Response:
        subs = await self._service.subscriptions(call.caller)
        return json_response(SubscriptionsOut([_out(s) for s in subs]))

    async def unsubscribe(self, call: Call[SubscriptionPath, None]) -> web.Response:
        await self._service.unsubscribe(call.caller, call.params.sid)
        return web.Response(status=204)

    async def settings(self, call: Call[NoParams, None]) -> web.Response:
        return json_response(PushSettingsBody(await self._service.previews(call.caller)))

    async def set_settings(self, call: Call[NoParams, PushSettingsBody]) -> web.Response:
        previews = await self._service.set_previews(call.caller, call.body.previews)
        return json_response(PushSettingsBody(previews))

    async def vapid(self, _: Call[NoParams, None]) -> web.Response:
        return json_response(VapidOut(self._signer.public_key))
