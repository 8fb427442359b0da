"""Every PNG Troupe writes: each visible axis labelled with a unit, titles that say what and when (rendered, then read back)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

UNIT = re.compile(r"\(.+\)")  # every axis label names its unit in parentheses


def _interval(v: float, w: float) -> dict[str, float]:
    return {"value": v, "ci_low": v - w, "ci_high": v + w}


def evaluation_report() -> dict[str, Any]:
    one_step = {"dm": 300.0, "ips": 310.0, "snips": 305.0, "dr": 308.0, "switch_dr": 307.0, "ncis": 306.0}
    sequential = {"pdis": 4000.0, "wpdis": 3900.0, "sequential_dr": 4100.0, "fqe": 3800.0}
    estimators = {}
    for name, v in {**one_step, **sequential}.items():
        w = v * 0.02
        estimators[name] = {
            "candidate": {"signals": {"watch_time": _interval(v, w)}},
            "baseline": {"signals": {"watch_time": _interval(v * 0.95, w)}},
            "difference": {"signals": {"watch_time": _interval(v * 0.05, w / 2)}},
        }
    return {
        "problem": "rank",
        "candidate": "rank/rcpo-20261120T000000Z-20261121T000000Z",
        "baseline": "rank/v1",
        "main_signal": "watch_time",
        "primary_estimator": "ncis",
        "confidence": 0.95,
        "n_rows": 865,
        "n_sessions": 60,
        "estimators": estimators,
        "created_at": "2026-12-04T03:40:00+00:00",
    }


def _check_axes(fig: Any) -> list[Any]:
    visible = [ax for ax in fig.axes if ax.axison]
    assert visible
    for ax in visible:
        assert ax.get_title(), ax
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert UNIT.search(label) or label.startswith(("off-policy estimator", "signal")), (ax.get_title(), label)
    return visible


def test_evaluation_plot_separates_per_decision_and_per_session_and_marks_estimators(tmp_path: Path) -> None:
    from pipelines.jobs.evaluate import plot_report, report_figure

    fig = report_figure(evaluation_report(), gate_estimator="dr")
    axes = _check_axes(fig)
    assert len(axes) == 4
    decision_axes = [ax for ax in axes if "per decision" in ax.get_ylabel()]
    session_axes = [ax for ax in axes if "per session" in ax.get_ylabel()]
    assert len(decision_axes) == 2 and len(session_axes) == 2
    for ax in decision_axes:
        assert "pdis" not in [t.get_text() for t in ax.get_xticklabels()]
    legends = " ".join(t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts())
    assert "primary estimator (ncis)" in legends and "gate's estimator (dr)" in legends
    assert "865 logged decisions" in fig._suptitle.get_text() and "2026-12-04 03:40" in fig._suptitle.get_text()
    plot_report(evaluation_report(), tmp_path / "evaluation.png", gate_estimator="dr")
    assert (tmp_path / "evaluation.png").stat().st_size > 10_000


def test_ab_plot_uses_percent_and_labels_the_sequential_panel(tmp_path: Path) -> None:
    from pipelines.ab.report import report_figure
    from pipelines.jobs.ab_report import ABReportConfig, build_report
    from tests.unit.test_ab_report import _logs

    decisions, feedback = _logs(n_users=800, lift=0.3)
    report = build_report(
        ABReportConfig(experiment="exp1", output_dir=tmp_path, weights={"control": 0.5, "treatment": 0.5}),
        decisions,
        feedback,
    )
    fig = report_figure(report, "live_watch_time")
    lift_ax, seq_ax = _check_axes(fig)
    assert "(%)" in lift_ax.get_xlabel()
    xs = [line.get_xdata()[0] for line in lift_ax.lines if len(line.get_xdata()) == 1]
    main_lift = report["signals"]["live_watch_time"]["vs_control"]["treatment"]["per_decision"]["relative"]["value"]
    assert any(abs(x - 100 * main_lift) < 1e-9 for x in xs)  # drawn in percent, not as a fraction
    assert "probability" in seq_ax.get_ylabel() and "mSPRT" in seq_ax.get_title()
    assert "A/B test exp1" in fig._suptitle.get_text() and "2026-11-10" in fig._suptitle.get_text()


def test_training_curves_are_labelled() -> None:
    from training.plots import curves_figure

    rows = [
        {"step": float(i), "charts/signal_watch_time": 300.0 + i, "charts/multiplier_click": 0.1 * i,
         "losses/actor": 1.0 / (i + 1), "charts/transitions_per_s": 5000.0}
        for i in range(10)
    ]  # fmt: skip
    fig = curves_figure(rows, "Training curves: run x — plotted 2026-12-04 03:40 UTC")
    axes = _check_axes(fig)
    assert len(axes) == 4
    labels = {ax.get_title(): ax.get_ylabel() for ax in axes}
    assert labels["charts/signal_watch_time"] == "signal_watch_time".removeprefix("signal_") + " (s per decision)"
    assert "λ" in labels["charts/multiplier_click"]
    assert all(ax.get_xlabel() == "training iteration (count)" for ax in axes)
    # charts first, losses after
    assert [ax.get_title() for ax in axes][-1] == "losses/actor"


@pytest.mark.parametrize("n", [1])
def test_ab_plot_with_one_daily_look_says_so(tmp_path: Path, n: int) -> None:
    from pipelines.ab.report import report_figure

    report = {
        "experiment": "e", "control": "control", "arms": ["control", "treatment"], "confidence": 0.95,
        "sequential_alpha": 0.05, "start": "2026-12-01T00:00", "end": "2026-12-02T00:00",
        "signals": {"watch_time": {"vs_control": {"treatment": {
            "per_decision": {"relative": _interval(0.05, 0.02)},
            "sequential": {"p_values": [0.4] * n, "days": ["2026-12-01"] * n}}}}},
    }  # fmt: skip
    fig = report_figure(report, "watch_time")
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert "one daily look so far" in texts
    assert np.isclose(fig.axes[0].lines[0].get_xdata()[0], 5.0)
