"""What people expect of a chat: edits, delete for everyone, reactions
(``kinds.py``), hidden messages and per-member settings (``routes.py``),
group settings and the retention purge (``retention.py``).

The stream's current view (``?view=current``) and the store's side of each
(targets, redaction, counts) are the core's: every feature reads the same
seq stream.
"""

from __future__ import annotations

from tidings.features import Feature, FeatureContext, Plugin
from tidings.features.messaging.kinds import DELETE, EDIT, REACTION
from tidings.features.messaging.retention import RetentionPurge
from tidings.features.messaging.routes import MessagingRoutes
from tidings.features.messaging.service import MessagingService


def _plug(context: FeatureContext) -> Plugin:
    service = MessagingService(context.store, context.service, context.publisher)
    settings = context.settings
    purge = RetentionPurge(
        context.store, context.metrics, settings.retention_days, settings.retention_sweep_s
    )
    return Plugin(routes=MessagingRoutes(service).routes(), start=purge.start, stop=purge.stop)


MESSAGING = Feature("messaging", content_kinds=(EDIT, DELETE, REACTION), plug=_plug)
