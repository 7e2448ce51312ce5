"""The alert rules and the dashboard in deploy/ speak of metrics the server
exports, and the rules are valid Prometheus rules.

``promtool check rules`` is the authority on validity; it is run when
installed (Debian's ``prometheus`` package), and in CI (CI=true) its absence
fails the test rather than skipping it. Without it, the rules are still
parsed here and every expression's metric names checked against a node's
``/metrics``, which is what a rename in the code would break.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tidings.app import build_node

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "tidings-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tidings-dashboard.json"
_METRIC = re.compile(r"\btidings_[a-z0-9_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every series name a node exports, labelled families without children
    included; with tracing on, as the delivery-rate alert and panels assume."""
    monkeypatch.setenv("TIDINGS_TRACE_ENABLED", "true")
    node = build_node(make_settings(tmp_path))
    text = node.metrics.render().decode()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SUFFIXES[family.type]
    }


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_names_exported_metrics_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = _exported(tmp_path, monkeypatch)
    rules = _rules()
    assert len(rules) >= 8
    for rule in rules:
        names = set(_METRIC.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"]
    alerts = {rule["alert"] for rule in rules}
    for wanted in ("DeliveryRate", "ChangelogWorkerLagging", "HandshakeSlow", "StoreUnavailable"):
        assert any(wanted in alert for alert in alerts), wanted


def test_every_dashboard_query_names_exported_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = _exported(tmp_path, monkeypatch)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    for expr in exprs:
        names = set(_METRIC.findall(expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
    shown = " ".join(exprs)
    for metric in (
        "tidings_delivery_rate",
        "tidings_connection_drops_total",
        "tidings_sends_total",
    ):
        assert metric in shown


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed; the rules were parsed and checked above")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout
