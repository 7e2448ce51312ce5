"""What every scenario's rows share: the row of a run that raised."""

from __future__ import annotations

from typing import Any

# Longest failure message kept in the row of a run that raised.
FAILURE_CHARS = 500


def failed_row(scenario: str, target: str, run: int, exc: BaseException) -> dict[str, Any]:
    """The row of a run that raised: which error, and its message (last line, bounded)."""
    lines = str(exc).strip().splitlines()
    return {
        "scenario": scenario,
        "target": target,
        "run": run,
        "failed": True,
        "errors": {f"run:{type(exc).__name__}": 1},
        "failure": (lines[-1] if lines else type(exc).__name__)[:FAILURE_CHARS],
    }
