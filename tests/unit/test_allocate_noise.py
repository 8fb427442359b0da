"""The noise split of benchmarks/allocate_noise.py: the sample part shrinks as 1/√N, the frontier with it."""

from __future__ import annotations

import pytest

from benchmarks.allocate_noise import gaussian_frontier, sample_noise
from training.envs.allocate import AllocateConfig


def test_the_sample_mean_cost_spread_falls_as_one_over_root_n() -> None:
    config = AllocateConfig()
    level_small, small = sample_noise(config, lam=0.45, n=64, samples=120, seed=1)
    level_large, large = sample_noise(config, lam=0.45, n=1024, samples=120, seed=1)
    assert level_small == pytest.approx(level_large, rel=0.05)  # the same policy and population either way
    assert small / large == pytest.approx(4.0, rel=0.3)  # √(1024 / 64); 120 samples estimate each std to ~7 %


def test_less_surprise_lets_a_constant_plan_run_closer_to_the_budget() -> None:
    assert gaussian_frontier(0.02, 0.95) > gaussian_frontier(0.04, 0.95) > gaussian_frontier(0.07, 0.95)
    # one-sided: with no surprise at all the plan sits at the budget and over-utilisation is 0
    assert gaussian_frontier(1e-6, 0.95) == pytest.approx(1.0, abs=1e-3)
