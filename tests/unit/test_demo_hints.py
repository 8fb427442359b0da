"""The demo's refusal advice follows the gate's reasons: one remedy per kind of reason, never a generic one."""

from __future__ import annotations

from pipelines.demo import HINT_CONSTRAINT, HINT_LOWER_BOUND, HINT_OVERLAP, DemoConfig, what_to_try

LOWER = "watch_time: lower bound of candidate − production is -1.7 (estimate -0.68, 95% CI [-1.7, 0.34]), not above 0"
CONSTRAINT = "constraint comment >= 1.1 violated: candidate estimate 0.7858"
OVERLAP = "effective sample size 1.1 is below 30: too little overlap between the candidate and the logging policy"


def test_each_reason_gets_its_own_remedy_in_order_once() -> None:
    hint = what_to_try([CONSTRAINT, CONSTRAINT.replace("comment", "share"), OVERLAP], "/runs/x/gate")
    assert hint.startswith(HINT_CONSTRAINT)
    assert hint.count(HINT_CONSTRAINT) == 1
    assert HINT_OVERLAP in hint
    assert HINT_LOWER_BOUND not in hint
    assert hint.endswith("/runs/x/gate/gate.md and gate.png.")


def test_a_wide_interval_asks_for_more_evidence() -> None:
    hint = what_to_try([LOWER], "/g")
    assert HINT_LOWER_BOUND in hint and "--users" in hint
    assert HINT_CONSTRAINT not in hint and HINT_OVERLAP not in hint


def test_behaviour_weights_are_checked_by_name() -> None:
    import pytest

    with pytest.raises(ValueError, match="behaviour_weights"):
        DemoConfig(behaviour_weights=(0.5, 0.3))
    with pytest.raises(ValueError, match="behaviour_weights"):
        DemoConfig(behaviour_weights=(1.5, 0.3, 0.3, 0.3, 0.3, 0.3))


def test_a_constraint_production_broke_too_is_blamed_on_the_day() -> None:
    from pipelines.demo import HINT_DAY_BELOW

    production = {"watch_time": 78.0, "click": 3.6, "like": 2.0, "follow": 0.33, "comment": 1.08, "share": 0.6}
    hint = what_to_try([CONSTRAINT], "/g", production)
    assert HINT_DAY_BELOW.format(signals="comment") in hint
    assert HINT_CONSTRAINT not in hint
    # A constraint production kept is the candidate's doing.
    hint = what_to_try([CONSTRAINT], "/g", {**production, "comment": 1.2})
    assert HINT_CONSTRAINT in hint


def test_the_reliability_benchmark_counts_each_kind_of_refusal() -> None:
    from benchmarks.demo_reliability import refusal_counts

    runs = [
        {"refused": f"gate REFUSED: {LOWER}; {OVERLAP}"},
        {"refused": f"gate REFUSED: {CONSTRAINT}"},
        {"refused": ""},  # the gate passed
    ]
    assert refusal_counts(runs) == {"overlap": 1, "lower_bound": 1, "constraint": 1}


def test_train_config_overrides_keep_the_rest_of_the_demo_budget() -> None:
    from pipelines.demo import DEFAULT_TRAIN_CONFIG, merged_train_config

    merged = merged_train_config({"algo": {"margin": 0.08}, "trust_region": {"min_ess_share": 0.5}})
    assert merged["algo"]["margin"] == 0.08
    assert merged["algo"]["warm_start_steps"] == DEFAULT_TRAIN_CONFIG["algo"]["warm_start_steps"]
    assert merged["run"] == DEFAULT_TRAIN_CONFIG["run"] and merged["trust_region"] == {"min_ess_share": 0.5}
    assert DEFAULT_TRAIN_CONFIG["algo"]["margin"] == 0.03  # the defaults themselves are left alone
