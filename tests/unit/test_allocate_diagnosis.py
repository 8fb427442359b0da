"""benchmarks/allocate_diagnosis.py's `--ceiling-mpc` pieces and allocate_lift's metric name (issue #16)."""

from __future__ import annotations

import numpy as np

from benchmarks import allocate_diagnosis as D
from benchmarks import allocate_lift as L
from benchmarks import allocate_quality as Q
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim

_UTIL = 2


def _obs(utilisation: float) -> np.ndarray:
    obs = np.zeros((4, 12), np.float32)
    obs[:, _UTIL] = utilisation
    return obs


def test_warm_feedback_keeps_lambda_across_days_and_skips_each_days_first_reading() -> None:
    ctl = Q.WarmFeedbackLambda(0.9, 1.5)
    ctl.reset()
    ctl(_obs(0.0))  # a day's first reading: neutral, λ stays 1
    lam = ctl(_obs(1.2))  # over target: λ rises
    assert lam > 1.0
    ctl.reset()  # a new day: λ carried, not back to 1
    assert ctl(_obs(0.0)) == lam  # and the new day's neutral first reading does not move it
    cold = M.FeedbackLambda(0.9, 1.5)
    cold(_obs(0.0))
    cold(_obs(1.2))
    cold.reset()
    assert cold(_obs(0.0)) == 1.0


def _day_actions(policy: object, config: AllocateConfig, n: int, day: int) -> list[np.ndarray]:
    sim = BatchedAllocateSim(n, config, day, autoreset=False)
    obs = sim.reset(day)
    policy.reset()  # type: ignore[attr-defined]
    out = []
    for _ in range(24):
        actions = policy(obs)  # type: ignore[operator]
        out.append(actions)
        obs, _, done, _ = sim.step(actions)
        if done.all():
            break
    return out


def test_controlled_rule_with_cold_feedback_is_the_value_cost_rule() -> None:
    """The warm arm differs from the scored rule only by its warm λ: cold, the two decide identically."""
    config = AllocateConfig()
    quality, cost = O.rule_quality_table(config), O.cost_table(config)
    rule = O.ValueCostRule(quality, cost, "feedback", Q.BEST_RULE_TARGET, gain=Q.BEST_RULE_GAIN)
    controlled = Q.ControlledRule(quality, cost, M.FeedbackLambda(Q.BEST_RULE_TARGET, Q.BEST_RULE_GAIN))
    for a, b in zip(_day_actions(rule, config, 16, 1013), _day_actions(controlled, config, 16, 1013), strict=True):
        np.testing.assert_array_equal(a, b)


def test_truth_policy_takes_lambda_from_an_outside_controller() -> None:
    config = AllocateConfig()
    sim = BatchedAllocateSim(16, config, 1013, autoreset=False)
    obs, _, _, _ = sim.step(O.ALL_ACTIONS[np.zeros(16, np.int64)])
    free = D.TruthFeedback(config, 0.98, 0.0, lambda o: 0.0)
    dear = D.TruthFeedback(config, 0.98, 0.0, lambda o: 1e3)
    cost = O.cost_table(config)
    index = {tuple(a): i for i, a in enumerate(O.ALL_ACTIONS.tolist())}
    spend_free = cost[[index[tuple(a)] for a in free(obs).tolist()]].sum()
    spend_dear = cost[[index[tuple(a)] for a in dear(obs).tolist()]].sum()
    assert free.lam == 0.0 and dear.lam == 1e3
    assert spend_dear < spend_free


def test_allocate_lift_does_not_emit_the_headline_name() -> None:
    day = Q.Day(np.ones(4), np.ones(4), np.full(4, 0.8), float("nan"))
    better = Q.Day(np.full(4, 1.02), np.ones(4), np.full(4, 0.8), float("nan"))
    metrics = L.lift_metrics([{"marca": better, "rule": day}, {"marca": better, "rule": day}], 1536, 8)
    names = [m.name for m in metrics]
    assert names[0] == "allocate.marca.revenue_lift_vs_rule_same_controller"
    assert "allocate.marca.revenue_lift_vs_rule" not in names
    assert metrics[0].goal is None
    assert abs(metrics[0].value - 0.02) < 1e-12


def test_allocate_own_target_probe_does_not_emit_the_headline_name() -> None:
    from benchmarks import allocate_own_target_probe as P

    day = Q.Day(np.ones(4), np.ones(4), np.full(4, 0.8), float("nan"))
    better = Q.Day(np.full(4, 1.02), np.ones(4), np.full(4, 0.8), float("nan"))
    metrics = P.lift_metrics([better, better], [better, better], [day, day], "note")
    names = [m.name for m in metrics]
    assert names[:2] == [
        "allocate.marca_own_target.revenue_lift_vs_rule_same_controller",
        "allocate.marca.revenue_lift_vs_rule_same_controller",
    ]
    assert "allocate.marca.revenue_lift_vs_rule" not in names
    assert all(m.goal is None for m in metrics[:2])
    assert abs(metrics[1].value - 0.02) < 1e-12


def test_ceiling_mpc_verdict_follows_the_written_rule() -> None:
    assert "out of reach" in D.ceiling_mpc_verdict(0.025, (0.02, 0.029), 0.008)
    assert "reachable" in D.ceiling_mpc_verdict(0.031, (0.029, 0.033), 0.008)
    assert "undecided" in D.ceiling_mpc_verdict(0.0297, (0.028, 0.031), 0.008)
    assert "no verdict" in D.ceiling_mpc_verdict(0.05, (0.04, 0.06), 0.02)  # over the bound: not a fair ceiling
