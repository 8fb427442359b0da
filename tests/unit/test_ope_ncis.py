"""NCIS for continuous actions: kernel ratios, relative clipping, self-normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.one_step import kernel_log_density, ncis
from training.ope.weights import gaussian_log_density

REWARDS = np.array([1.0, 2.0, 3.0, 4.0])
LOG_RATIO = np.log([1.0, 2.0, 4.0, 1.0])


def test_ncis_hand_computed_without_binding_clip() -> None:
    est = ncis(REWARDS, LOG_RATIO + 5.0, np.full(4, 5.0), clip=100.0)
    # Σ w r / Σ w with w ∝ [1, 2, 4, 1]: (1 + 4 + 12 + 4) / 8
    assert est.value[0] == pytest.approx(21 / 8)


def test_ncis_relative_clip_hand_computed() -> None:
    est = ncis(REWARDS, LOG_RATIO, np.zeros(4), clip=1.5)
    # mean ratio 2 → normalised [0.5, 1, 2, 0.5] → clipped [0.5, 1, 1.5, 0.5]
    w = np.array([0.5, 1.0, 1.5, 0.5])
    assert est.value[0] == pytest.approx(float(w @ REWARDS / w.sum()))
    assert est.diagnostics is not None and est.diagnostics.share_clipped == 0.25


def test_same_kernel_around_the_same_centres_gives_the_on_policy_mean() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    centres = rng.normal(size=(50, 3))
    r = rng.normal(size=(50, 2))
    k = kernel_log_density(a, centres, 0.5)
    np.testing.assert_allclose(ncis(r, k, k).value, r.mean(axis=0), atol=1e-12)


def test_ncis_recovers_deterministic_target_value() -> None:
    # r = 1 − ‖a − x‖²; target a = x (value 1 − 2σ²·0 ≈ 1 in the kernel limit); behaviour N(0.5 x, 0.3²).
    rng = np.random.default_rng(1)
    n = 20_000
    x = rng.uniform(-1, 1, size=(n, 2))
    centre_b = 0.5 * x
    a = centre_b + 0.3 * rng.normal(size=(n, 2))
    r = 1.0 - ((a - x) ** 2).sum(axis=1)
    behaviour_ld = gaussian_log_density(a, centre_b, np.log(0.3))
    est = ncis(r, kernel_log_density(a, x, 0.05), behaviour_ld, clip=50.0)
    behaviour_value = float(r.mean())
    assert behaviour_value < 0.7
    assert est.value[0] == pytest.approx(1.0, abs=0.05)


def test_ncis_counts_missing_densities_and_checks_bandwidth() -> None:
    est = ncis(REWARDS, LOG_RATIO, np.array([0.0, np.nan, 0.0, 0.0]), clip=100.0)
    assert est.diagnostics is not None and est.diagnostics.n_missing_propensity == 1
    assert est.value[0] == pytest.approx((1 * 1 + 4 * 3 + 1 * 4) / 6)
    with pytest.raises(OPEInputError, match="bandwidth"):
        kernel_log_density(np.zeros((1, 1)), np.zeros((1, 1)), 0.0)
    with pytest.raises(OPEInputError, match="target_log_density"):
        ncis(REWARDS, LOG_RATIO[:2], np.zeros(4))


def test_box_truncated_kernel_is_a_density_on_the_box() -> None:
    # A centre on the upper bound: the truncated kernel integrates to 1 over [0, 1], the plain one to 1/2.
    grid = np.linspace(0.0, 1.0, 20_001)[:, None]
    centre = np.ones_like(grid)
    step = grid[1, 0] - grid[0, 0]
    plain = np.exp(kernel_log_density(grid, centre, 0.1)).sum() * step
    truncated = np.exp(kernel_log_density(grid, centre, 0.1, 0.0, 1.0)).sum() * step
    assert plain == pytest.approx(0.5, abs=1e-3)
    assert truncated == pytest.approx(1.0, abs=1e-3)
