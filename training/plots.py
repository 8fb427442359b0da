"""Training curves as one labelled PNG (`curves.png` next to metrics.csv), readable without opening TensorBoard.

Panels are grouped by the metric key's prefix (`charts/…` first, then
`losses/…`, then the rest), each with its x axis in training iterations and its
y axis named with its unit. Units (ours: what the keys written by
training/rl and training/algorithms hold): `charts/signal_<s>` is the mean of
signal s per decision in that iteration's rollouts; `charts/multiplier_<s>` a
Lagrange multiplier λ (unitless); `charts/transitions_per_s` a rate; losses
and the rest are unitless.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SIGNAL_UNITS = {"watch_time": "s", "live_watch_time": "s", "revenue": "cents", "compute_cost": "compute units"}


def curve_unit(key: str) -> str:
    """The y-axis label of one metric key, unit in parentheses."""
    name = key.split("/", 1)[-1]
    if name.startswith("episode_return_"):
        signal = name.removeprefix("episode_return_")
        return f"{signal} ({SIGNAL_UNITS.get(signal, 'count')} per episode)"
    if name == "episode_length":
        return "episode length (decisions)"
    if "constraint_slack_" in name:
        signal = name.split("constraint_slack_", 1)[1]
        return f"slack of {signal} ({SIGNAL_UNITS.get(signal, 'count')} per decision)"
    if name.startswith("signal_"):
        signal = name.removeprefix("signal_")
        return f"{signal} ({SIGNAL_UNITS.get(signal, 'count')} per decision)"
    if name.endswith("_per_s"):
        return f"{name} (per second)"
    if name.startswith("multiplier_"):
        return f"λ for {name.removeprefix('multiplier_')} (unitless)"
    if name == "entropy":
        return "policy entropy (nats)"
    if name.startswith("kl_"):
        return f"{name} (nats)"
    return f"{name} (unitless)"


def _order(key: str) -> tuple[int, int, str]:
    """Episode returns, constraint slacks and multipliers first (what a reader looks for), then charts, losses."""
    first = next((i for i, part in enumerate(("episode_return", "constraint_slack", "multiplier")) if part in key), 3)
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return (first, {"charts": 0, "losses": 1}.get(prefix, 2), key)


def curves_figure(rows: Sequence[Mapping[str, float]], title: str) -> Any:
    """Small multiples, one panel per key (scales differ by orders of magnitude), 3 per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = sorted({k for r in rows for k in r if k != "step"}, key=_order)
    cols = 3
    n_rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(5 * cols, 3.0 * n_rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        if "constraint_slack" in key:
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")  # below the line the constraint is broken
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("training iteration (count)", fontsize=8)
        ax.set_ylabel(curve_unit(key), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_curves(rows: Sequence[Mapping[str, float]], path: Path, what: str = "training run") -> None:
    """`curves_figure` → PNG at 110 dpi; the title names the run and when it was plotted."""
    import matplotlib.pyplot as plt

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig = curves_figure(rows, f"Training curves: {what} — {len(rows)} logged iterations, plotted {stamp}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
