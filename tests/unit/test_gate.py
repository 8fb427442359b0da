"""The offline gate's rule on hand-made evaluation reports: pass only with a positive lower bound and every constraint kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.problems import RANK, SLOT
from pipelines.jobs.gate import GateConfig, GateInputError, decide, inputs_from_report, run_gate


def _est(values: dict[str, tuple[float, float, float]], ess: float | None = None) -> dict[str, Any]:
    """An Estimate.to_dict()-shaped entry: signal → (value, ci_low, ci_high)."""
    return {
        "estimator": "x",
        "confidence": 0.95,
        "signals": {s: {"value": v, "stderr": 0.0, "ci_low": lo, "ci_high": hi} for s, (v, lo, hi) in values.items()},
        "diagnostics": None if ess is None else {"effective_sample_size": ess},
        "warnings": [],
    }


LIKE = next(c.threshold for c in RANK.constraints if c.signal == "like")


def _rank_report(main_diff: tuple[float, float, float], like: float = 1.5, ess: float = 500.0) -> dict[str, Any]:
    """Every constraint estimate at 1.5× its threshold (CI ± 0.2×); `like` at `like`× its threshold."""
    cand = {s: (1.0, 0.9, 1.1) for s in RANK.signal_names}
    for c in RANK.constraints:
        factor = like if c.signal == "like" else 1.5
        cand[c.signal] = (factor * c.threshold, (factor - 0.2) * c.threshold, (factor + 0.2) * c.threshold)
    cand["watch_time"] = (300.0, 290.0, 310.0)
    diff = {s: (0.0, -0.1, 0.1) for s in RANK.signal_names}
    diff["watch_time"] = main_diff
    return {
        "primary_estimator": "ncis",
        "estimators": {
            "ncis": {"candidate": _est(cand, ess), "baseline": _est(cand), "difference": _est(diff)},
            "dm": {"candidate": _est(cand), "difference": _est({s: (-5.0, -6.0, -4.0) for s in RANK.signal_names})},
        },
    }


def test_passes_when_lower_bound_positive_and_constraints_hold() -> None:
    d = decide("rank", inputs_from_report(_rank_report((5.0, 1.0, 9.0))), GateConfig())
    assert d.passed and d.reasons == []
    assert d.estimator == "ncis"  # the report's primary estimator
    assert [c.signal for c in d.constraints] == [c.signal for c in RANK.constraints]
    assert all(c.satisfied for c in d.constraints)


def test_refuses_when_lower_bound_not_above_zero_even_if_estimate_positive() -> None:
    d = decide("rank", inputs_from_report(_rank_report((5.0, -0.5, 10.5))), GateConfig())
    assert not d.passed
    assert len(d.reasons) == 1 and "watch_time" in d.reasons[0] and "-0.5" in d.reasons[0]


def test_min_lift_margin_is_applied() -> None:
    report = inputs_from_report(_rank_report((5.0, 1.0, 9.0)))
    assert decide("rank", report, GateConfig(min_lift=0.99)).passed
    assert not decide("rank", report, GateConfig(min_lift=1.0)).passed  # strictly above


def test_refuses_on_a_violated_constraint() -> None:
    # The candidate's like estimate is half its threshold.
    d = decide("rank", inputs_from_report(_rank_report((5.0, 1.0, 9.0), like=0.5)), GateConfig())
    assert not d.passed
    assert any(r.startswith(f"constraint like >= {LIKE:g} violated") for r in d.reasons)
    assert [c.signal for c in d.constraints if not c.satisfied] == ["like"]


def test_interval_bound_is_pessimistic() -> None:
    # like at 1.1× its threshold passes on the point estimate; its lower bound (0.9×) does not.
    report = inputs_from_report(_rank_report((5.0, 1.0, 9.0), like=1.1))
    assert decide("rank", report, GateConfig()).passed
    assert not decide("rank", report, GateConfig(constraint_bound="interval")).passed


def test_refuses_on_too_small_effective_sample_size() -> None:
    d = decide("rank", inputs_from_report(_rank_report((5.0, 1.0, 9.0), ess=3.0)), GateConfig())
    assert not d.passed and "effective sample size 3.0" in d.reasons[0]


def test_upper_bound_constraint_direction() -> None:
    # SLOT: live_exposure <= 0.25.
    cand = {s: (1.0, 0.5, 1.5) for s in SLOT.signal_names}
    cand["live_exposure"] = (0.3, 0.28, 0.32)
    diff = {s: (1.0, 0.5, 1.5) for s in SLOT.signal_names}
    report = {"estimators": {"dr": {"candidate": _est(cand, 100.0), "difference": _est(diff)}}}
    d = decide("slot", inputs_from_report(report), GateConfig())
    assert not d.passed and d.reasons == ["constraint live_exposure <= 0.25 violated: candidate estimate 0.3"]


def test_named_estimator_and_missing_pieces_are_reported_by_name() -> None:
    report = _rank_report((5.0, 1.0, 9.0))
    assert not decide("rank", inputs_from_report(report, "dm"), GateConfig()).passed  # dm says −5
    with pytest.raises(GateInputError, match="estimator 'fqe' is not in the evaluation report"):
        inputs_from_report(report, "fqe")
    with pytest.raises(GateInputError, match="no 'estimators' section"):
        inputs_from_report({})
    del report["estimators"]["ncis"]["candidate"]["signals"]["watch_time"]
    del report["estimators"]["ncis"]["difference"]["signals"]["watch_time"]
    with pytest.raises(GateInputError, match="main signal 'watch_time'"):
        decide("rank", inputs_from_report(report), GateConfig())


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="constraint_bound"):
        GateConfig(constraint_bound="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_effective_sample_size"):
        GateConfig(min_effective_sample_size=-1)


def test_run_gate_writes_reports_and_is_idempotent(tmp_path: Path) -> None:
    report_path = tmp_path / "evaluation.json"
    report_path.write_text(json.dumps(_rank_report((5.0, -1.0, 11.0))))
    run_dir = tmp_path / "run"
    first = run_gate("rank", report_path, run_dir)
    assert first["passed"] is False
    written = json.loads((run_dir / "gate" / "gate.json").read_text())
    assert written["passed"] is False and written["main"]["difference_ci"] == [-1.0, 11.0]
    assert "REFUSED" in (run_dir / "gate" / "gate.md").read_text()
    # Same config: the recorded decision is returned even if the report changed afterwards.
    report_path.write_text(json.dumps(_rank_report((5.0, 1.0, 9.0))))
    assert run_gate("rank", report_path, run_dir)["passed"] is False
    # A different config decides again.
    assert run_gate("rank", report_path, run_dir, GateConfig(min_lift=-2.0))["passed"] is True
    with pytest.raises(GateInputError, match="does not exist"):
        run_gate("rank", tmp_path / "missing.json", tmp_path / "other")


def test_a_waived_constraint_is_reported_not_enforced() -> None:
    report = inputs_from_report(_rank_report((5.0, 1.0, 9.0), like=0.5))
    d = decide("rank", report, GateConfig(waive_constraints=("like",)))
    assert d.passed
    like = next(c for c in d.constraints if c.signal == "like")
    assert like.waived and not like.satisfied
    with pytest.raises(ValueError, match="not constraints of rank"):
        decide("rank", report, GateConfig(waive_constraints=("live_exposure",)))
