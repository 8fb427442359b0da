"""Exploration: the logged propensities and densities are the ones the actions were drawn with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from serving.exploration import (
    ExplorationConfig,
    clipped_gaussian_log_density,
    discrete_probabilities,
    sample_box,
    sample_discrete,
    sample_multi_discrete,
)


def test_discrete_probabilities_mix_softmax_and_uniform() -> None:
    logits = np.array([2.0, 0.0, -1.0], dtype=np.float32)
    cfg = ExplorationConfig(temperature=0.5, epsilon=0.1)
    z = logits.astype(np.float64) / 0.5
    soft = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(discrete_probabilities(logits, cfg), 0.9 * soft + 0.1 / 3, rtol=1e-9)


def test_sampled_frequencies_match_logged_propensities() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 0.5, -0.5, 0.0], dtype=np.float32)
    cfg = ExplorationConfig(temperature=1.0, epsilon=0.2)
    n = 20_000
    counts = np.zeros(4)
    logged = {}
    for _ in range(n):
        a, p = sample_discrete(logits, cfg, rng)
        counts[a] += 1
        logged[a] = p
    for a, p in logged.items():
        assert abs(counts[a] / n - p) < 0.015, (a, counts[a] / n, p)


def test_greedy_takes_argmax_with_propensity_one() -> None:
    rng = np.random.default_rng(0)
    a, p = sample_discrete(
        np.array([0.1, 3.0, 0.2], dtype=np.float32), ExplorationConfig(temperature=0, epsilon=0), rng
    )
    assert (a, p) == (1, 1.0)


def test_multi_discrete_propensity_is_product_of_components() -> None:
    rng = np.random.default_rng(1)
    scores = np.arange(7, dtype=np.float32) / 3
    cfg = ExplorationConfig(temperature=1.0, epsilon=0.0)
    actions, prop = sample_multi_discrete(scores, (2, 2, 3), cfg, rng)
    parts = [scores[0:2], scores[2:4], scores[4:7]]
    expected = math.prod(float(discrete_probabilities(s, cfg)[a]) for s, a in zip(parts, actions, strict=True))
    assert prop == pytest.approx(expected)
    with pytest.raises(ValueError, match="expected 7 entries"):
        sample_multi_discrete(scores[:5], (2, 2, 3), cfg, rng)


def test_clipped_gaussian_density_integrates_to_one() -> None:
    """Inside density + the two boundary atoms = 1: the density is a proper one w.r.t. the documented measure."""
    mu, sigma, low, high = 0.8, 0.4, 0.0, 1.0
    inside, _ = integrate.quad(
        lambda a: math.exp(clipped_gaussian_log_density(np.array([a]), np.array([mu]), np.array([sigma]), low, high)),
        low + 1e-12,
        high - 1e-12,
    )
    atom_low = math.exp(clipped_gaussian_log_density(np.array([low]), np.array([mu]), np.array([sigma]), low, high))
    atom_high = math.exp(clipped_gaussian_log_density(np.array([high]), np.array([mu]), np.array([sigma]), low, high))
    assert atom_low == pytest.approx(stats.norm.cdf((low - mu) / sigma))
    assert atom_high == pytest.approx(stats.norm.sf((high - mu) / sigma))
    assert inside + atom_low + atom_high == pytest.approx(1.0, abs=1e-6)


def test_sample_box_logs_density_of_the_clipped_action() -> None:
    rng = np.random.default_rng(2)
    mean = np.array([0.5, 0.95, 0.02], dtype=np.float32)
    log_std = np.log(np.array([0.1, 0.2, 0.3], dtype=np.float32))
    s = sample_box(mean, log_std, 0.0, 1.0, ExplorationConfig(std_scale=1.0), rng)
    assert np.all((s.action >= 0) & (s.action <= 1))
    expected = clipped_gaussian_log_density(
        s.action, mean.astype(np.float64), np.exp(log_std.astype(np.float64)), 0.0, 1.0
    )
    assert s.log_density == pytest.approx(expected)
    greedy = sample_box(mean, log_std, 0.0, 1.0, ExplorationConfig(std_scale=0.0), rng)
    np.testing.assert_allclose(greedy.action, mean, rtol=1e-6)
    assert greedy.log_density == 0.0


def test_config_rejects_contradictions() -> None:
    with pytest.raises(ValueError, match="fixed_std has no effect"):
        ExplorationConfig(std_scale=0.0, fixed_std=0.1)
    with pytest.raises(ValueError, match="epsilon"):
        ExplorationConfig(epsilon=1.5)
