"""The trace feature's settings: read like every feature's, checked, and each
one documented with its default in docs/operations.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tidings.features.trace.settings import TraceSettings
from tidings.settings import load_section

OPERATIONS = Path(__file__).resolve().parents[3] / "docs" / "operations.md"


def test_every_setting_is_documented_with_its_default() -> None:
    text = OPERATIONS.read_text()
    documented = dict(
        re.findall(r"^\| `(\w+)` \| `TIDINGS_TRACE_\w+` \| `?([^`|]*)`? \|", text, re.M)
    )
    expected = {}
    for field in dataclasses.fields(TraceSettings):
        default = field.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        expected[field.name] = shown if default != "" else "empty"
    assert {name: documented.get(name) for name in expected} == expected


def test_read_from_the_environment_and_checked() -> None:
    env = {"TIDINGS_TRACE_CLUSTER_SAMPLE_RATE": "0.5", "TIDINGS_TRACE_NODE": "edge-1"}
    own = load_section(TraceSettings, "trace", None, env)
    assert own.cluster_sample_rate == 0.5
    assert own.node == "edge-1"
    with pytest.raises(ValueError, match="sample_rate"):
        TraceSettings(sample_rate=1.5)
    with pytest.raises(ValueError, match="flush_ms"):
        TraceSettings(flush_ms=0)
