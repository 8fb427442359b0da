"""Behaviour policies log exact probabilities; evaluate_policy and generate_logs report what the simulators did."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.stats import truncnorm

from models.events import DecisionEvent, FeedbackEvent, Signals
from models.problems import ALLOCATE, RANK, SLOT
from training.envs import behaviour_policy, constant_policy
from training.envs.behaviour import AllocateBehaviour, RankBehaviour, SlotBehaviour
from training.envs.evaluate import evaluate_policy, generate_logs, iter_records


def test_rank_behaviour_log_density_is_the_truncated_normal_density() -> None:
    policy = RankBehaviour(sigma=0.15, seed=1)
    obs = np.zeros((500, RANK.observation_size), np.float32)
    actions, log_density = policy.sample(obs)
    assert actions.shape == (500, 18) and actions.min() >= 0.0 and actions.max() <= 1.0
    mu = np.asarray(RANK.default_action)
    reference = truncnorm.logpdf(actions, (0 - mu) / 0.15, (1 - mu) / 0.15, loc=mu, scale=0.15).sum(axis=1)
    np.testing.assert_allclose(log_density, reference, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(policy.probability(obs, actions), log_density)
    # The sample mean matches the truncated normal's mean (the watch-time weight sits on the upper bound).
    expected_mean = truncnorm.mean((0 - mu) / 0.15, (1 - mu) / 0.15, loc=mu, scale=0.15)
    np.testing.assert_allclose(actions.mean(axis=0), expected_mean, atol=0.02)
    assert np.isneginf(policy.probability(obs[:1], np.full((1, 18), 1.5)))[0]


def test_slot_behaviour_propensities_are_exact() -> None:
    policy = SlotBehaviour(seed=3)
    obs = np.zeros((20_000, SLOT.observation_size), np.float32)
    live = SLOT.observation_slices()["live_candidate"].start
    obs[:, live] = policy.threshold  # p_insert = 1/2
    probs = policy.action_probabilities(obs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    eps = policy.epsilon / 7
    np.testing.assert_allclose(
        probs[0], [0.5 * (1 - policy.epsilon) + eps, eps, eps, 0.5 * (1 - policy.epsilon) + eps, eps, eps, eps]
    )
    actions, propensity = policy.sample(obs)
    freq = np.bincount(actions, minlength=7) / actions.size
    np.testing.assert_allclose(freq, probs[0], atol=0.01)
    np.testing.assert_allclose(propensity, probs[0][actions])
    with pytest.raises(ValueError, match="epsilon"):
        SlotBehaviour(epsilon=0.0)


def test_allocate_behaviour_propensity_is_a_product_over_components() -> None:
    policy = AllocateBehaviour(epsilon=0.3, seed=0)
    obs = np.zeros((4, ALLOCATE.observation_size), np.float32)
    static = np.asarray(ALLOCATE.default_action, np.int64)
    nvec = np.asarray(ALLOCATE.action.nvec)  # type: ignore[union-attr]
    other = (static + 1) % nvec
    p_static = np.prod(0.7 + 0.3 / nvec)
    p_other = np.prod(0.3 / nvec)
    np.testing.assert_allclose(policy.probability(obs[:2], np.stack([static, other])), [p_static, p_other])
    actions, propensity = policy.sample(np.zeros((1000, ALLOCATE.observation_size), np.float32))
    np.testing.assert_allclose(propensity, policy.probability(obs, actions))
    assert (actions == static).all(axis=1).mean() == pytest.approx(p_static, abs=0.05)


def test_behaviour_factory_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, 27\)"):
        behaviour_policy("rank").sample(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="18 weights"):
        RankBehaviour(mean=(0.5,) * 6)


def test_evaluate_reports_signals_with_intervals_and_return_rate() -> None:
    result = evaluate_policy("slot", constant_policy("slot", [0]), 60, 3, seed=4)
    assert result.unit == "user-day"
    for estimate in result.signals.values():
        assert estimate.ci_low <= estimate.mean <= estimate.ci_high and estimate.n == 60
    assert result.signals["live_watch_time"].mean == 0.0 and result.per_decision["live_exposure"] == 0.0
    assert 0.0 < result.return_rate < 1.0  # type: ignore[operator]
    assert [c.signal for c in result.constraints] == ["live_exposure"] and result.constraints_satisfied
    # per_day sums to the horizon total.
    total = sum(result.per_day["watch_time"]) / 3
    assert total == pytest.approx(result.signals["watch_time"].mean, rel=1e-9)
    assert result.decisions > 60
    assert evaluate_policy("slot", constant_policy("slot", [0]), 60, 3, seed=4).to_dict() == result.to_dict()


def test_evaluate_allocate_reports_budget_metrics() -> None:
    result = evaluate_policy("allocate", constant_policy("allocate", ALLOCATE.default_action), 50, 1, seed=0)
    m = result.allocate
    assert m is not None and result.unit == "request"
    assert len(m.utilisation_by_interval) == 96
    assert 0.0 < m.utilisation < 1.0 and m.over_budget_fraction == 0.0
    assert m.revenue_per_request.mean == result.signals["revenue"].mean > 0


@pytest.mark.parametrize("problem", ["rank", "slot", "allocate"])
def test_generate_logs_columns_are_consistent_and_become_events(problem: str) -> None:
    policy = behaviour_policy(problem, seed=2)
    logs = (
        generate_logs(problem, policy, 12, 2, seed=0, intervals_per_day=4)
        if problem == "allocate"
        else (generate_logs(problem, policy, 12, 2, seed=0))
    )
    n = logs["decision_id"].shape[0]
    assert n > 12
    for key in ("user_id", "session_id", "timestamp", "propensity", "log_density", "session_end"):
        assert logs[key].shape == (n,), key
    assert logs["observation"].shape[0] == logs["action"].shape[0] == n
    assert all(v.shape == (n,) for v in logs["signals"].values())
    # The logged probability is the policy's probability of the logged action.
    prob = logs[policy.probability_kind]
    np.testing.assert_allclose(prob, policy.probability(logs["observation"], logs["action"]), rtol=1e-5)
    if problem != "allocate":
        # Per user, time moves forward; a session ends before the next one begins.
        for uid in np.unique(logs["user_id"]):
            ts = logs["timestamp"][logs["user_id"] == uid]
            assert (np.diff(ts.astype(np.int64)) >= 0).all()
        assert logs["session_end"].sum() >= np.unique(logs["user_id"]).size
    record = next(iter_records(logs))
    decision = DecisionEvent(
        request_id=f"r{record['decision_id']}",
        timestamp=record["timestamp"],
        problem=record["problem"],
        user_id=f"u{record['user_id']}",
        policy_name="behaviour",
        policy_version="1",
        observation=record["observation"],
        action=record["action"],
        propensity=record["propensity"],
        log_density=record["log_density"],
    )
    feedback = FeedbackEvent(
        request_id=decision.request_id,
        timestamp=record["timestamp"] + dt.timedelta(seconds=1),
        user_id=decision.user_id,
        problem=problem,
        signals=Signals(**record["signals"]),
    )
    assert decision.timestamp.tzinfo is not None and feedback.signals is not None
