"""IPS and SNIPS on hand-computed logs, plus weight diagnostics and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.one_step import CIOptions, ips, snips
from training.ope.weights import importance_weights

# Four logged decisions, two signals. w = target / behaviour = [2, 0, 2, 2].
REWARDS = np.array([[1.0, 2.0], [0.0, 4.0], [1.0, 6.0], [0.0, 8.0]])
BEHAVIOUR = np.array([0.5, 0.5, 0.25, 0.25])
TARGET = np.array([1.0, 0.0, 0.5, 0.5])


def test_ips_hand_computed() -> None:
    est = ips(REWARDS, TARGET, BEHAVIOUR, signals=("click", "watch_time"))
    # mean(w r): (2 + 0 + 2 + 0) / 4 = 1;  (4 + 0 + 12 + 16) / 4 = 8
    np.testing.assert_allclose(est.value, [1.0, 8.0])
    per_row = np.array([[2, 4], [0, 0], [2, 12], [0, 16]], dtype=float)
    np.testing.assert_allclose(est.stderr, per_row.std(axis=0, ddof=1) / 2.0)
    assert est.for_signal("watch_time")["value"] == pytest.approx(8.0)
    assert est.ci_low[0] < 1.0 < est.ci_high[0]


def test_snips_hand_computed() -> None:
    est = snips(REWARDS, TARGET, BEHAVIOUR)
    # Σ w r / Σ w = 4 / 6 and 32 / 6
    np.testing.assert_allclose(est.value, [4 / 6, 32 / 6])


def test_diagnostics_hand_computed() -> None:
    d = ips(REWARDS, TARGET, BEHAVIOUR).diagnostics
    assert d is not None
    assert d.effective_sample_size == pytest.approx(36 / 12)  # (Σw)² / Σw² = 6² / 12
    assert d.weight_max == 2.0 and d.weight_mean == 1.5
    assert d.n_missing_propensity == 0 and d.share_clipped == 0.0


def test_ips_on_logs_of_the_target_policy_equals_on_policy_mean() -> None:
    rng = np.random.default_rng(0)
    n, k = 500, 4
    probs = rng.dirichlet(np.ones(k), size=n)
    actions = np.array([rng.choice(k, p=p) for p in probs])
    rewards = rng.normal(actions[:, None] * np.array([1.0, -0.5]), 1.0)
    logged_p = probs[np.arange(n), actions]
    est = ips(rewards, logged_p, logged_p)
    np.testing.assert_allclose(est.value, rewards.mean(axis=0), rtol=0, atol=1e-12)
    assert est.diagnostics is not None and est.diagnostics.ess_share == pytest.approx(1.0)


def test_ips_recovers_a_known_value_off_policy() -> None:
    # Behaviour uniform over 3 actions; target prefers action 2. Truth = Σ_a π(a) μ_a.
    rng = np.random.default_rng(1)
    mu = np.array([0.1, 0.5, 0.9])
    target = np.array([0.1, 0.2, 0.7])
    n = 4000
    a = rng.integers(0, 3, n)
    r = rng.binomial(1, mu[a]).astype(float)
    truth = float(target @ mu)
    for est in (ips(r, target[a], np.full(n, 1 / 3)), snips(r, target[a], np.full(n, 1 / 3))):
        assert est.ci_low[0] <= truth <= est.ci_high[0], est.estimator
        assert abs(est.value[0] - truth) < 0.03


def test_missing_and_zero_propensities_are_counted_and_excluded() -> None:
    behaviour = np.array([0.5, np.nan, 0.0, 0.25])
    est = ips(REWARDS, TARGET, behaviour)
    d = est.diagnostics
    assert d is not None
    assert (d.n_rows, d.n_used, d.n_missing_propensity, d.n_zero_propensity) == (4, 2, 1, 1)
    assert d.share_missing_propensity == 0.25
    # rows 0 and 3 remain: w = [2, 2]
    np.testing.assert_allclose(est.value, [(2 * 1 + 2 * 0) / 2, (2 * 2 + 2 * 8) / 2])
    assert any("excluded" in w for w in est.warnings)


def test_clipping_caps_weights_and_reports_share() -> None:
    iw = importance_weights(TARGET, BEHAVIOUR, clip=1.5)
    np.testing.assert_allclose(iw.weights, [1.5, 0.0, 1.5, 1.5])
    assert iw.diagnostics.share_clipped == 0.75


def test_bootstrap_ci_is_seeded_and_close_to_closed_form() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(1.0, 1.0, 400)
    p = np.full(400, 0.5)
    a = ips(r, p, p, ci=CIOptions("bootstrap", n_bootstrap=200, seed=3))
    b = ips(r, p, p, ci=CIOptions("bootstrap", n_bootstrap=200, seed=3))
    normal = ips(r, p, p)
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    assert a.ci_method == "bootstrap"
    width_ratio = (a.ci_high - a.ci_low) / (normal.ci_high - normal.ci_low)
    assert 0.8 < width_ratio[0] < 1.2


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(OPEInputError, match="behaviour"):
        ips(REWARDS, TARGET, BEHAVIOUR[:3])
    with pytest.raises(OPEInputError, match="behaviour.*\\(0, 1\\]"):
        ips(REWARDS, TARGET, BEHAVIOUR * 3)
    with pytest.raises(OPEInputError, match="rewards"):
        ips(np.array([1.0, np.inf, 0, 0]), TARGET, BEHAVIOUR)
    with pytest.raises(OPEInputError, match="CIOptions.method"):
        CIOptions("jackknife")  # type: ignore[arg-type]
