"""Push notifications for devices that are offline: Web Push (VAPID, RFC
8030/8291/8292) and signed webhooks, the bridge operators use to reach FCM or
APNs.

The notifier (``notifier.py``) follows the change log and records what waits
to be told, per (subscription, conversation); the dispatcher
(``dispatcher.py``) sends each notification once it is due, unless the device
acknowledged the messages or the user read them meanwhile, collapsing a
conversation's messages into one. Neither is on the send path. Where requests
may go is the guard's (``guard.py``); the routes are in ``routes.py``.
"""

from __future__ import annotations

from tidings.features import Feature, FeatureContext, Plugin, ReadinessCheck
from tidings.features.push.delivery import Poster
from tidings.features.push.dispatcher import Dispatcher
from tidings.features.push.guard import AllowList, Policy
from tidings.features.push.metrics import PushMetrics
from tidings.features.push.notifier import Notifier
from tidings.features.push.port import PushStore
from tidings.features.push.postgres import PostgresPushStore
from tidings.features.push.routes import PushRoutes
from tidings.features.push.service import PushService
from tidings.features.push.settings import PushSettings
from tidings.features.push.sqlite import SqlitePushStore
from tidings.features.push.webpush import Signer, private_pem


def _plug(context: FeatureContext) -> Plugin:
    own: PushSettings = context.own
    database = context.database
    store: PushStore = (
        SqlitePushStore(database) if database.engine == "sqlite" else PostgresPushStore(database)
    )
    allow = AllowList(own.webhook_allow)
    policies = {"webhook": Policy(allow, strict=True), "webpush": Policy(allow, strict=False)}
    posters = {kind: Poster(policy, own.timeout_s) for kind, policy in policies.items()}
    signer = Signer(own.vapid_subject)
    kinds = context.service.content_kinds
    dispatcher = Dispatcher(
        store, context.store, kinds, posters, signer, own, PushMetrics(context.metrics)
    )
    notifier = Notifier(
        store,
        {kind.name: kind for kind in kinds},
        own.delay_ms,
        own.max_age_s * 1000,
        dispatcher.wake,
    )

    async def start() -> None:
        signer.load(await private_pem(store, own.vapid_key_file))
        await dispatcher.start()

    service = PushService(store, policies, own.subscriptions_per_device)
    return Plugin(
        routes=PushRoutes(service, signer).routes(),
        workers=[notifier],
        checks=[ReadinessCheck("push", signer.ready, critical=False)],
        start=start,
        stop=dispatcher.stop,
    )


PUSH = Feature("push", settings=PushSettings, migrations="tidings.features.push", plug=_plug)
