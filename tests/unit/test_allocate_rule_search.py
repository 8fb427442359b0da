"""The rule search under the MPC's bound (benchmarks/allocate_rule_search.py) and how allocate_quality judges the
lift over the rule with it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import allocate_rule_search as S
from benchmarks.common import Metric
from models.problems import ALLOCATE


def _cell(target: float, gain: float, revenue: float, over: float, compute: float = 0.8) -> S.Cell:
    return S.Cell(target, gain, revenue, over, 0.1, 0.9, compute, S.is_feasible(over, compute))


def test_feasible_is_the_papers_over_utilisation_bound_and_the_compute_threshold() -> None:
    threshold = ALLOCATE.constraints[0].threshold
    assert S.is_feasible(0.01, threshold)
    assert not S.is_feasible(0.0101, 0.5)
    assert not S.is_feasible(0.0, threshold + 1e-6)


def test_a_cell_over_the_bound_is_passed_over_for_a_poorer_one_within_it() -> None:
    cells = [_cell(0.90, 1.5, 1.70, 0.012), _cell(0.88, 1.5, 1.68, 0.009), _cell(0.85, 1.5, 1.66, 0.001)]
    assert S.select(cells) == cells[1]


def test_with_no_feasible_cell_the_least_over_utilised_is_chosen() -> None:
    cells = [_cell(0.95, 1.5, 1.70, 0.03), _cell(0.90, 1.5, 1.60, 0.02)]
    assert S.select(cells) == cells[1]


def _surface(monkeypatch: pytest.MonkeyPatch, peak: float, bound_at: float) -> list[tuple[float, float]]:
    """run_cell replaced by a surface: revenue peaks at u* = `peak` (best at gain 1.5); over-utilisation crosses
    0.01 at u* = `bound_at`. Returns the cells run."""
    ran: list[tuple[float, float]] = []

    def fake(target: float, gain: float, *args: object) -> S.Cell:
        ran.append((target, gain))
        revenue = 2.0 - (target - peak) ** 2 - 0.01 * abs(gain - 1.5)
        return _cell(target, gain, revenue, 0.01 * np.exp(20.0 * (target - bound_at)))

    monkeypatch.setattr(S, "run_cell", fake)
    return ran


def test_the_search_takes_the_best_cell_within_the_bound_not_the_revenue_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    _surface(monkeypatch, peak=0.95, bound_at=0.90)
    winner, cells = S.search(None, None, [])  # type: ignore[arg-type]
    assert (winner.target, winner.gain) == (0.90, 1.5)
    assert winner.over_utilisation <= S.OVER_UTILISATION_LIMIT
    assert len(cells) == len(S.TARGETS) * len(S.GAINS)


def test_the_grid_is_extended_while_the_winner_sits_on_its_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _surface(monkeypatch, peak=1.02, bound_at=1.05)
    winner, _ = S.search(None, None, [])  # type: ignore[arg-type]
    assert winner.target == pytest.approx(1.02)
    assert (1.03, 1.5) in ran  # one step past the winner, to show it is interior


def test_the_controlled_rule_under_the_feedback_lambda_is_the_rules_own_feedback_schedule() -> None:
    from benchmarks.allocate_quality import rule_policy
    from training.algorithms.marca import FeedbackLambda
    from training.envs import allocate_oracle as O
    from training.envs.allocate import AllocateConfig

    config = AllocateConfig()
    own = O.ValueCostRule(O.rule_quality_table(config), O.cost_table(config), "feedback", 0.9, gain=1.5)
    controlled = rule_policy(config)(FeedbackLambda(0.9, 1.5))
    a, b = O.run_days(own, config, 32, [3000]), O.run_days(controlled, config, 32, [3000])
    np.testing.assert_array_equal(a.lam, b.lam)
    np.testing.assert_array_equal(a.revenue, b.revenue)


def test_the_lift_counts_only_with_marca_as_served_within_the_bound() -> None:
    from benchmarks.allocate_quality import verdict

    def metrics(lift: float, over: float) -> list[Metric]:
        return [
            Metric("allocate.marca.revenue_lift_vs_rule", lift, "ratio"),
            Metric("allocate.mpc.over_utilisation", over, "budget"),
            Metric("allocate.rule.over_utilisation", 0.003, "budget"),
        ]

    assert "lift over the rule: met" in verdict(metrics(0.031, 0.009))
    assert "not met" in verdict(metrics(0.031, 0.011))
    assert "not met" in verdict(metrics(0.029, 0.009))


def _tables() -> tuple[object, np.ndarray, np.ndarray]:
    from training.envs import allocate_oracle as O
    from training.envs.allocate import AllocateConfig

    config = AllocateConfig()
    return config, O.rule_quality_table(config), O.cost_table(config)


def test_the_search_scores_each_day_warm_after_the_day_before() -> None:
    """Since 2026-12-05 each search day starts where the rule's λ ended the day before (not at λ = 1)."""
    from benchmarks import allocate_quality as Q
    from training.envs import allocate_oracle as O

    config, quality, cost = _tables()
    warm = S.run_warm_days(lambda: Q.warm_rule(quality, cost, 0.9, 1.5), config, 16, [3000])  # type: ignore[arg-type]
    rule = Q.warm_rule(quality, cost, 0.9, 1.5)
    before = O.run_days(rule, config, 16, [2999])  # type: ignore[arg-type]
    assert before.lam[0, -1] != 1.0
    assert warm.lam[0, 0] == before.lam[0, -1]  # the scored day opens with the warm-up day's last λ
    np.testing.assert_array_equal(warm.revenue, O.run_days(rule, config, 16, [3000]).revenue)  # type: ignore[arg-type]
    cold = O.run_days(O.ValueCostRule(quality, cost, "feedback", 0.9, gain=1.5), config, 16, [3000])  # type: ignore[arg-type]
    assert cold.lam[0, 0] == 1.0 and not np.array_equal(cold.revenue, warm.revenue)


def test_allocate_qualitys_rule_is_scored_warm() -> None:
    """`rule`, the headline's baseline, runs through the day before (λ carried): not the cold rule's day."""
    from benchmarks import allocate_quality as Q
    from training.envs import allocate_oracle as O

    config, quality, cost = _tables()
    day = Q.best_rule_day(config, 16, 1013)  # type: ignore[arg-type]
    rule = Q.warm_rule(quality, cost, Q.BEST_RULE_TARGET, Q.BEST_RULE_GAIN)
    Q.run_day(rule, config, 16, 1012)  # type: ignore[arg-type]
    np.testing.assert_array_equal(day.revenue, Q.run_day(rule, config, 16, 1013).revenue)  # type: ignore[arg-type]
    cold_rule = O.ValueCostRule(quality, cost, "feedback", Q.BEST_RULE_TARGET, gain=Q.BEST_RULE_GAIN)
    assert not np.array_equal(day.revenue, Q.run_day(cold_rule, config, 16, 1013).revenue)  # type: ignore[arg-type]
