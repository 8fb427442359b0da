"""NCIS for continuous actions: kernel ratios, relative clipping, self-normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.one_step import CIOptions, choose_ncis_cap, kernel_log_density, ncis, ncis_mse_cap
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


# ---------------------------------------------------------------------------
# ncis_mse_cap: the cap chosen by estimated MSE
# ---------------------------------------------------------------------------
def _self_normalised(w: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
    """Σ w r / Σ w and its influence w (r − V) / mean(w), written out by hand."""
    value = float(w @ r / w.sum())
    return value, w * (r - value) / w.mean()


def _se(psi: np.ndarray) -> float:
    return float(psi.std(ddof=1) / np.sqrt(psi.shape[0]))


def test_choose_ncis_cap_hand_computed() -> None:
    # mean ratio 2 → normalised w = [0.5, 1, 2, 0.5]; candidates 1.5 and 5 (5 ≥ max w caps nothing: dropped).
    r = REWARDS
    w = np.array([0.5, 1.0, 2.0, 0.5])
    choice = choose_ncis_cap(w, r[:, None], caps=(5.0, 1.5))
    assert choice.caps == (1.5, np.inf)
    v_inf, psi_inf = _self_normalised(w, r)
    v_cap, psi_cap = _self_normalised(np.array([0.5, 1.0, 1.5, 0.5]), r)
    assert v_inf == pytest.approx(21 / 8) and v_cap == pytest.approx(18 / 7)
    bias, bias_se = v_cap - v_inf, _se(psi_cap - psi_inf)
    mse_cap = _se(psi_cap) ** 2 + max(bias**2 - bias_se**2, 0.0)
    np.testing.assert_allclose(choice.value[:, 0], [v_cap, v_inf])
    np.testing.assert_allclose(choice.stderr[:, 0], [_se(psi_cap), _se(psi_inf)])
    np.testing.assert_allclose(choice.bias[:, 0], [bias, 0.0], atol=1e-15)
    np.testing.assert_allclose(choice.mse[:, 0], [mse_cap, _se(psi_inf) ** 2])
    np.testing.assert_allclose(choice.score, [mse_cap / _se(psi_inf) ** 2, 1.0])
    # Capping the heavy row raises the variance here (its reward lies near the estimate): no cap is chosen.
    assert mse_cap == pytest.approx(0.20404177) and _se(psi_inf) ** 2 == pytest.approx(0.17382812)
    assert choice.cap == np.inf and choice.index == 1


def _two_weight_logs(shift: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rewards N(0, 1) and log-ratios: 95 % of rows weight 1, 5 % weight 20; the heavy rows' rewards `shift` higher."""
    rng = np.random.default_rng(seed)
    heavy = rng.random(n) < 0.05
    r = rng.normal(size=n) + shift * heavy
    return r, np.log(np.where(heavy, 20.0, 1.0))


def test_ncis_mse_cap_keeps_the_ratios_when_capping_would_shift_the_estimate() -> None:
    # The heavy rows carry a different reward: any cap pulls the estimate far from the truth, so no cap is chosen
    # and the result is plain self-normalised IS with its own interval.
    r, log_ratio = _two_weight_logs(shift=3.0)
    est = ncis_mse_cap(r, log_ratio, np.zeros_like(r))
    plain = ncis(r, log_ratio, np.zeros_like(r), clip=1e9)
    assert est.value[0] == pytest.approx(plain.value[0])
    assert est.ci_low[0] == pytest.approx(plain.ci_low[0]) and est.ci_high[0] == pytest.approx(plain.ci_high[0])
    assert est.diagnostics is not None and est.diagnostics.share_clipped == 0.0
    assert "no cap" in est.warnings[0]


def test_ncis_mse_cap_caps_noise_and_widens_its_interval_by_the_shift() -> None:
    # The heavy rows carry the same reward distribution: capping them only removes variance, so a cap binds.
    r, log_ratio = _two_weight_logs(shift=0.0)
    est = ncis_mse_cap(r, log_ratio, np.zeros_like(r))
    w = np.exp(log_ratio) / np.exp(log_ratio).mean()
    choice = choose_ncis_cap(w, r[:, None])
    assert np.isfinite(choice.cap) and choice.cap < w.max()
    k = choice.index
    assert choice.score[k] < choice.score[-1]
    assert est.value[0] == pytest.approx(ncis(r, log_ratio, np.zeros_like(r), clip=choice.cap).value[0])
    widened = np.sqrt(choice.stderr[k, 0] ** 2 + choice.bias[k, 0] ** 2)
    assert est.stderr[0] == pytest.approx(widened)
    assert est.ci_high[0] - est.ci_low[0] == pytest.approx(2 * 1.959963984540054 * widened)
    assert est.ci_low[0] <= 0.0 <= est.ci_high[0]


def test_ncis_mse_cap_one_cap_for_every_signal() -> None:
    r, log_ratio = _two_weight_logs(shift=0.0)
    two = np.stack([r, 100.0 * r], axis=1)  # same signal on another scale: the same relative MSE, the same cap
    est = ncis_mse_cap(two, log_ratio, np.zeros_like(r), signals=("a", "b"))
    assert est.signals == ("a", "b")
    assert est.value[1] == pytest.approx(100.0 * est.value[0])


def test_ncis_mse_cap_rejects_bad_input() -> None:
    r, log_ratio = _two_weight_logs(shift=0.0, n=50)
    with pytest.raises(OPEInputError, match="ci"):
        ncis_mse_cap(r, log_ratio, np.zeros_like(r), ci=CIOptions(method="bootstrap"))
    with pytest.raises(OPEInputError, match="caps"):
        ncis_mse_cap(r, log_ratio, np.zeros_like(r), caps=())
    with pytest.raises(OPEInputError, match="caps"):
        ncis_mse_cap(r, log_ratio, np.zeros_like(r), caps=(2.0, -1.0))
    one_row = np.full(50, -np.inf)
    one_row[3] = 0.0
    with pytest.raises(OPEInputError, match="fewer than 2"):
        ncis_mse_cap(r, one_row, np.zeros_like(r))
    with pytest.raises(OPEInputError, match="zero target density"):
        ncis_mse_cap(r, np.full(50, -np.inf), np.zeros_like(r))
    with pytest.raises(OPEInputError, match="rewards"):
        ncis_mse_cap(np.full(50, np.nan), log_ratio, np.zeros_like(r))
