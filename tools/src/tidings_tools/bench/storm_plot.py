"""The restart storm's figure: reconnect attempts per second over time, one line per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Figure size in inches and resolution: readable in a Markdown page.
FIGSIZE = (10.0, 7.0)
DPI = 110


def plot_storm(runs: list[tuple[dict[str, Any], list[tuple[float, float]]]], path: str) -> None:
    """Attempts per second (100 ms bins) and the share of affected clients back, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=FIGSIZE, sharex=True, height_ratios=(3, 2))
    for row, fine in runs:
        if row.get("failed"):
            continue
        label = f"{row['mode']}, backoff {row['backoff']}"
        if fine:
            # Every 100 ms bin, empty ones as 0 (a step over a gap would draw a false plateau).
            bins = {round(t * 10): v for t, v in fine}
            lo, hi = min(bins), max(bins) + 1
            xs = [b / 10 for b in range(lo, hi + 1)]
            ys = [bins.get(b, 0.0) for b in range(lo, hi + 1)]
            top.step(xs, ys, where="post", label=label, linewidth=1.2)
        affected = row["affected"] or 1
        ts = [p["t"] + 1 for p in row["timeline"]]
        share = [100.0 * p["back"] / affected for p in row["timeline"]]
        bottom.step([0, *ts], [0.0, *share], where="post", label=label, linewidth=1.2)
    first = next((r for r, _ in runs if not r.get("failed")), None)
    title = "Restart storm: one node of a cluster restarted"
    if first is not None:
        title += (
            f" ({first['clients']:,} clients, {first['nodes']} nodes; admission per node: "
            f"{first['handshake_concurrency']} handshakes at once, "
            f"{first['handshake_rate_per_s']:,.0f}/s)"
        )
    top.set_title(title, fontsize=11)
    top.set_ylabel("reconnect attempts per second\n(100 ms bins)")
    top.set_yscale("symlog", linthresh=100)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=9)
    bottom.set_ylabel("affected clients back\nand synced (%)")
    bottom.set_xlabel("seconds after the node was killed / sent SIGTERM")
    bottom.set_ylim(0, 105)
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
