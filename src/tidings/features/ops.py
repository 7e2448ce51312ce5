"""The operator routes (/healthz, /readyz, /metrics, /openapi.json), plugged as a feature."""

from __future__ import annotations

from tidings.features import Feature, FeatureContext, Plugin
from tidings.http.ops import ops_routes


def _plug(context: FeatureContext) -> Plugin:
    return Plugin(routes=ops_routes(context.readiness, context.metrics.render, context.routes))


OPS = Feature("ops", plug=_plug)
