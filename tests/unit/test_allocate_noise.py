"""The noise split of benchmarks/allocate_noise.py: the sample part shrinks as 1/√N, the frontier with it."""

from __future__ import annotations

import pytest

from benchmarks.allocate_noise import gaussian_frontier, sample_noise
from training.envs.allocate import AllocateConfig


def test_the_iid_sample_mean_cost_spread_falls_as_one_over_root_n() -> None:
    config = AllocateConfig(stratified_arrivals=False)  # the old world: N i.i.d. requests
    level_small, small = sample_noise(config, lam=0.45, n=64, samples=120, seed=1)
    level_large, large = sample_noise(config, lam=0.45, n=1024, samples=120, seed=1)
    assert level_small == pytest.approx(level_large, rel=0.05)  # the same policy and population either way
    assert small / large == pytest.approx(4.0, rel=0.3)  # √(1024 / 64); 120 samples estimate each std to ~7 %


def test_the_stratified_world_removes_most_of_the_sample_spread_at_the_same_level() -> None:
    level_iid, iid = sample_noise(AllocateConfig(stratified_arrivals=False), lam=0.45, n=256, samples=120, seed=1)
    level, stratified = sample_noise(AllocateConfig(), lam=0.45, n=256, samples=120, seed=1)
    assert level == pytest.approx(level_iid, rel=0.01)  # unbiased: the same mean utilisation
    assert stratified < 0.3 * iid  # measured 0.006 vs 0.042 at N = 256


def test_less_surprise_lets_a_constant_plan_run_closer_to_the_budget() -> None:
    assert gaussian_frontier(0.02, 0.95) > gaussian_frontier(0.04, 0.95) > gaussian_frontier(0.07, 0.95)
    # one-sided: with no surprise at all the plan sits at the budget and over-utilisation is 0
    assert gaussian_frontier(1e-6, 0.95) == pytest.approx(1.0, abs=1e-3)
