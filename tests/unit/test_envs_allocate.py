"""The `allocate` world's mechanisms (training/envs/allocate.py) and the oracle's exactness (allocate_oracle.py)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from models.problems import ALLOCATE, ALLOCATE_DEFAULT_ENTRY_POINT, ALLOCATE_ENTRY_POINTS
from training.envs import make_batched
from training.envs.allocate import AllocateConfig, BatchedAllocateSim
from training.envs.allocate_oracle import (
    ALL_ACTIONS,
    Requests,
    expected_cost,
    expected_revenue,
    quality_matrix,
)

CONFIG = AllocateConfig()
DEFAULT = np.asarray(ALLOCATE.default_action, np.int64)
MOST = np.asarray(ALLOCATE.action.nvec, np.int64) - 1  # type: ignore[union-attr]
HOME, RELATED, PUSH = (ALLOCATE_ENTRY_POINTS.index(e) for e in ("home_feed", "related", "push"))


def _tile(action: np.ndarray, n: int) -> np.ndarray:
    return np.tile(action, (n, 1))


def test_controller_sees_last_intervals_load_and_utilisation_not_the_current_ones() -> None:
    sim = BatchedAllocateSim(32, CONFIG, seed=3, autoreset=False)
    obs = sim.reset()
    assert obs.shape == (32, ALLOCATE.observation_size) and obs.shape[1] == 12
    for _ in range(40):
        current_traffic = sim.traffic
        obs, _, _, info = sim.step(_tile(DEFAULT, 32))
        assert info["load"] == pytest.approx(current_traffic)
        # The next observation carries this interval's readings: one interval late.
        assert obs[0, 1] == pytest.approx(info["load"], rel=1e-6)
        assert obs[0, 2] == pytest.approx(info["utilisation"], rel=1e-6)
        assert sim.traffic != pytest.approx(info["load"], rel=1e-9)


def test_overload_carries_a_backlog_into_the_next_interval_and_answers_late() -> None:
    sim = BatchedAllocateSim(64, CONFIG, seed=1, autoreset=False)
    sim.reset()
    backlog_seen, late_share = [], []
    while not sim.episode_over:
        _, rewards, _, info = sim.step(_tile(MOST, 64))
        backlog_seen.append(info["backlog_in"])
        late_share.append(1.0 - info["served"].mean())
        if info["utilisation"] > CONFIG.capacity:
            assert sim.backlog == pytest.approx(min(info["utilisation"] - CONFIG.capacity, CONFIG.max_backlog))
            assert rewards["revenue"].mean() < 0.5 * info["request_value"].mean()
    assert max(backlog_seen) > 0.0
    # Cheap allocations never build a queue.
    cheap = BatchedAllocateSim(64, CONFIG, seed=1, autoreset=False)
    cheap.reset()
    while not cheap.episode_over:
        _, _, _, info = cheap.step(np.zeros((64, 6), np.int64))
        assert info["backlog_in"] == 0.0 and info["served"].mean() > 0.97
    assert max(late_share) > 0.5


def test_late_answers_grow_with_utilisation_and_with_the_requests_cost() -> None:
    costs = np.array([0.3, 1.0, 2.0])
    low = CONFIG.on_time_probability(costs, 0.5)
    high = CONFIG.on_time_probability(costs, 1.1)
    assert np.all(np.diff(low) < 0) and np.all(np.diff(high) < 0)
    assert np.all(high < low)
    # M/M/1: P(late) = exp(−(1 − ρ)·d/s) under capacity.
    rho = 0.5 / CONFIG.capacity
    assert low[1] == pytest.approx(1.0 - np.exp(-(1.0 - rho) * CONFIG.deadline / 1.0))
    # Over capacity only the capacity's share is served in the interval.
    assert CONFIG.on_time_probability(np.array([1e-6]), 2.0 * CONFIG.capacity)[0] == pytest.approx(0.5)


def test_cost_grows_with_traffic() -> None:
    assert CONFIG.contention_factor(1.4) > CONFIG.contention_factor(1.0) == 1.0 > CONFIG.contention_factor(0.6)
    sim = BatchedAllocateSim(512, CONFIG, seed=2, autoreset=False)
    sim.reset()
    ratios = []
    while not sim.episode_over:
        traffic = sim.traffic
        _, rewards, _, _ = sim.step(_tile(DEFAULT, 512))
        ratios.append((traffic, rewards["compute_cost"].mean() / CONFIG.expected_cost(DEFAULT[None, :])[0]))
    t, r = np.asarray(ratios).T
    assert np.corrcoef(t, r)[0, 1] > 0.9
    assert r[t > 1.3].mean() > r[t < 0.7].mean() * 1.08


def test_request_features_change_which_channel_pays_off() -> None:
    cold, medium, heavy = 5.0, 80.0, 2000.0
    only = {c: np.array([[int(i == c) for i in range(3)] + [1, 1, 1]]) for c in range(3)}

    def q(channel: int, history: float, entry: int) -> float:
        return float(CONFIG.slate_quality(only[channel], np.array([history]), np.array([entry]))[0])

    # Collaborative filtering needs history; trending serves cold users and push landings; content the related page.
    assert q(0, heavy, HOME) > 2.0 * q(0, cold, HOME)
    assert q(2, cold, HOME) > q(0, cold, HOME) and q(0, heavy, HOME) > q(2, heavy, HOME)
    assert q(1, medium, RELATED) > q(0, medium, RELATED) and q(1, medium, HOME) < q(0, medium, HOME)
    assert q(2, heavy, PUSH) > q(2, heavy, HOME)


def test_two_policies_on_one_seed_see_the_same_requests_and_noise() -> None:
    a = make_batched("allocate", 16, seed=5, autoreset=False)
    b = make_batched("allocate", 16, seed=5, autoreset=False)
    obs_a, obs_b = a.reset(), b.reset()
    for _ in range(5):
        obs_a, ra, _, ia = a.step(_tile(DEFAULT, 16))
        obs_b, rb, _, ib = b.step(_tile(MOST, 16))
        assert np.array_equal(ia["request_value"], ib["request_value"])
        assert np.array_equal(ia["entry_point"], ib["entry_point"]) and ia["load"] == ib["load"]
        # Same cost noise: the cost ratio of two fixed actions is the table's ratio (traffic and noise cancel).
        expected = CONFIG.expected_cost(MOST[None, :])[0] / CONFIG.expected_cost(DEFAULT[None, :])[0]
        np.testing.assert_allclose(rb["compute_cost"] / ra["compute_cost"], expected, rtol=1e-5)


def _first_interval_mean_costs(config: AllocateConfig, seeds: range, n: int = 256) -> np.ndarray:
    """Mean cost at mean traffic of each seed's first interval under a value-dependent policy (fixed λ)."""
    out = []
    for seed in seeds:
        sim = BatchedAllocateSim(n, config, seed=seed, autoreset=False)
        sim.reset()
        actions = np.where((sim.request_value > 2.0)[:, None], MOST, DEFAULT)
        traffic = sim.traffic
        _, _, _, info = sim.step(actions)
        out.append(info["utilisation"] * config.budget_per_request / (traffic * config.contention_factor(traffic)))
    return np.asarray(out)


def test_an_intervals_mean_cost_carries_almost_no_sample_noise_and_no_bias() -> None:
    """Stratified arrivals (the default): the N-request mean cost at a fixed policy barely varies, same mean."""
    stratified = _first_interval_mean_costs(CONFIG, range(100, 180))
    iid = _first_interval_mean_costs(AllocateConfig(stratified_arrivals=False), range(100, 180))
    assert stratified.std() < 0.25 * iid.std()  # measured 0.16; i.i.d. 256 requests: relative std 0.035
    # Unbiased: the two worlds' mean costs agree within the i.i.d. world's standard error.
    assert abs(stratified.mean() - iid.mean()) < 3.0 * iid.std() / np.sqrt(len(iid))


def test_stratified_requests_keep_each_requests_distribution() -> None:
    """Each request, taken alone, is still drawn from the arrival distribution (the first request of many intervals)."""
    first = [BatchedAllocateSim(64, CONFIG, seed=seed, autoreset=False) for seed in range(600)]
    for sim in first:
        sim.reset()
    group = np.array([sim.user_group[0] for sim in first])
    entry = np.array([sim.entry_point[0] for sim in first])
    log_value = np.log([sim.request_value[0] for sim in first]) - np.log(np.asarray(CONFIG.value_group_factor)[group])
    for k, p in enumerate(CONFIG.world.activity_group_probs):
        assert np.mean(group == k) == pytest.approx(p, abs=4.0 * np.sqrt(p * (1 - p) / 600))
    for k, p in enumerate(CONFIG.entry_point_probs):
        assert np.mean(entry == k) == pytest.approx(p, abs=4.0 * np.sqrt(p * (1 - p) / 600))
    assert log_value.mean() == pytest.approx(np.log(CONFIG.value_median_cents), abs=4.0 / np.sqrt(600))
    assert log_value.std() == pytest.approx(CONFIG.value_sigma, rel=0.1)


def test_oracle_expectations_equal_the_simulators_means() -> None:
    """E[revenue] and E[cost] of the oracle against many simulated requests at a fixed state."""
    n = 8_000
    sim = BatchedAllocateSim(n, CONFIG, seed=7, autoreset=False)
    sim.reset()
    requests = Requests(sim.request_value.astype(np.float64), sim.history_length.astype(np.float64), sim.entry_point)
    rng = np.random.default_rng(0)
    choice = rng.integers(0, ALL_ACTIONS.shape[0], size=n)
    cost_mean = expected_cost(CONFIG, sim.traffic)[choice].mean()
    # The interval's utilisation is what the simulator will compute from the realised costs: predict it from E[cost].
    utilisation = sim.traffic * cost_mean / CONFIG.budget_per_request
    predicted = expected_revenue(CONFIG, requests, sim.traffic, utilisation)[np.arange(n), choice]
    _, rewards, _, info = sim.step(ALL_ACTIONS[choice])
    assert info["utilisation"] == pytest.approx(utilisation, rel=0.01)
    assert rewards["compute_cost"].mean() == pytest.approx(cost_mean, rel=0.01)
    revenue = rewards["revenue"].astype(np.float64)
    se = revenue.std() / np.sqrt(n)
    assert abs(revenue.mean() - predicted.mean()) < 3.0 * se
    # Per-request expectations rank requests: realised revenue tracks them.
    assert np.corrcoef(predicted, revenue)[0, 1] > 0.7


def test_quality_matrix_is_the_simulators_slate_quality() -> None:
    sim = BatchedAllocateSim(20, CONFIG, seed=9, autoreset=False)
    sim.reset()
    requests = Requests(sim.request_value.astype(np.float64), sim.history_length.astype(np.float64), sim.entry_point)
    rows = np.repeat(np.arange(20), ALL_ACTIONS.shape[0])
    direct = CONFIG.slate_quality(np.tile(ALL_ACTIONS, (20, 1)), sim.history_length[rows], sim.entry_point[rows])
    np.testing.assert_allclose(quality_matrix(CONFIG, requests).ravel(), direct, rtol=1e-6)


def test_observation_decodes_back_to_the_request_features() -> None:
    sim = BatchedAllocateSim(50, CONFIG, seed=4, autoreset=False)
    obs = sim.reset()
    decoded = Requests.from_observation(obs)
    np.testing.assert_allclose(decoded.value, sim.request_value, rtol=1e-5)
    np.testing.assert_allclose(decoded.history_length, sim.history_length, rtol=1e-4, atol=1e-3)
    assert np.array_equal(decoded.entry_point, sim.entry_point)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("entry_point_probs", (0.5, 0.5, 0.5), "entry_point_probs"),
        ("history_median", (1.0, 2.0), "history_median"),
        ("capacity", 0.0, "capacity"),
        ("traffic_noise_persistence", 1.0, "traffic_noise_persistence"),
        ("max_queue_utilisation", 1.0, "max_queue_utilisation"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllocateConfig(**{field: value})  # type: ignore[arg-type]


def test_serving_request_features_are_optional_and_validated() -> None:
    from pydantic import ValidationError

    from serving.schemas import AllocateRequest, EntryPoint

    old = AllocateRequest(user_id="u", request_value=3.0, system_load=1.0, budget_utilisation=0.5)
    assert old.user_history_length == 80.0 and old.entry_point == "home_feed"
    new = AllocateRequest(
        user_id="u",
        request_value=3.0,
        system_load=1.0,
        budget_utilisation=0.5,
        user_history_length=3,
        entry_point="push",
    )
    assert new.entry_point == "push"
    assert typing.get_args(EntryPoint) == ALLOCATE_ENTRY_POINTS
    assert AllocateRequest.model_fields["entry_point"].default == ALLOCATE_DEFAULT_ENTRY_POINT
    with pytest.raises(ValidationError, match="entry_point"):
        AllocateRequest(user_id="u", request_value=3.0, system_load=1.0, budget_utilisation=0.5, entry_point="search")


def test_evaluate_allocate_controlled_reports_paired_days_and_budget_metrics() -> None:
    from training.envs.allocate_oracle import StaticRule, ValueCostRule, cost_table, rule_quality_table
    from training.envs.evaluate import evaluate_allocate_controlled

    small = {"intervals_per_day": 24}
    static = evaluate_allocate_controlled(StaticRule(tuple(int(x) for x in DEFAULT)), [3, 4], 32, **small)
    again = evaluate_allocate_controlled(StaticRule(tuple(int(x) for x in DEFAULT)), [3, 4], 32, **small)
    assert static.revenue_per_request_by_day == again.revenue_per_request_by_day  # seeded
    config = AllocateConfig(intervals_per_day=24)
    rule = ValueCostRule(rule_quality_table(config), cost_table(config), "feedback", 0.8)
    controlled = evaluate_allocate_controlled(rule, [3, 4], 32, **small)
    u = np.asarray(controlled.utilisation_by_interval)
    assert u.shape == (2, 24) and np.isfinite(np.asarray(controlled.lambda_by_interval)).all()
    assert controlled.over_budget_fraction == pytest.approx(float((u > 1.0).mean()))
    assert controlled.over_utilisation == pytest.approx(float(np.maximum(u - 1.0, 0.0).mean()))
    # The static allocation has no λ; a value-aware rule earns more on the same days.
    assert np.isnan(np.asarray(static.lambda_by_interval)).all()
    assert min(np.subtract(controlled.revenue_per_request_by_day, static.revenue_per_request_by_day)) > 0
    with pytest.raises(ValueError, match="requests_per_interval"):
        evaluate_allocate_controlled(rule, [], 32)
