"""Direct method, doubly robust and Switch-DR, and the linear reward models behind them."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.one_step import direct_method, doubly_robust, ips, switch_dr
from training.ope.reward_models import (
    categorical_expected_features,
    categorical_features,
    fit_ridge,
    gaussian_expected_features,
    gaussian_features,
)

R = np.array([1.0, 0.0])
TARGET = np.array([1.0, 0.25])
BEHAVIOUR = np.array([0.5, 0.5])  # w = [2, 0.5]
Q_LOGGED = np.array([0.5, 0.5])
Q_TARGET = np.array([0.8, 0.2])


def test_dm_is_the_mean_model_prediction() -> None:
    assert direct_method(Q_TARGET).value[0] == pytest.approx(0.5)


def test_dr_hand_computed() -> None:
    # mean(0.8 + 2·(1 − 0.5), 0.2 + 0.5·(0 − 0.5)) = mean(1.8, −0.05)
    est = doubly_robust(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET)
    assert est.value[0] == pytest.approx(0.875)


def test_dr_reduces_to_ips_with_a_zero_model_and_to_dm_with_a_perfect_one() -> None:
    zero = np.zeros(2)
    assert doubly_robust(R, TARGET, BEHAVIOUR, zero, zero).value[0] == pytest.approx(ips(R, TARGET, BEHAVIOUR).value[0])
    assert doubly_robust(R, TARGET, BEHAVIOUR, R, Q_TARGET).value[0] == pytest.approx(0.5)


def test_switch_dr_interpolates_between_dr_and_dm() -> None:
    dr = doubly_robust(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET).value[0]
    assert switch_dr(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET, tau=100.0).value[0] == pytest.approx(dr)
    assert switch_dr(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET, tau=0.1).value[0] == pytest.approx(0.5)
    # τ = 1: row 0 (w = 2) uses the model only; row 1 keeps its correction → mean(0.8, −0.05)
    assert switch_dr(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET, tau=1.0).value[0] == pytest.approx(0.375)
    with pytest.raises(OPEInputError, match="tau"):
        switch_dr(R, TARGET, BEHAVIOUR, Q_LOGGED, Q_TARGET, tau=0.0)


def test_categorical_features_fit_a_linear_reward_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    a = rng.integers(0, 4, 200)
    coef = rng.normal(size=(4, 4))  # per action: bias + 3 slopes
    y = np.einsum("nd,nd->n", np.c_[np.ones(200), x], coef[a])
    model = fit_ridge(categorical_features(x, a, (4,)), y, l2=0.0)
    np.testing.assert_allclose(model.predict(categorical_features(x, a, (4,)))[:, 0], y, atol=1e-8)
    # expected features: Σ_a π(a|x) q(x, a)
    probs = rng.dirichlet(np.ones(4), size=200)
    by_hand = sum(probs[:, k] * model.predict(categorical_features(x, np.full(200, k), (4,)))[:, 0] for k in range(4))
    np.testing.assert_allclose(model.predict(categorical_expected_features(x, [probs]))[:, 0], by_hand, atol=1e-8)


def test_gaussian_expected_features_match_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3))
    mean, std = rng.normal(size=(2, 2)), np.array([0.3, 0.6])
    samples = mean[None] + std * rng.normal(size=(50_000, 2, 2))
    mc = np.mean([gaussian_features(x, s) for s in samples[:2000]], axis=0)
    np.testing.assert_allclose(gaussian_expected_features(x, mean, std), mc, atol=0.05)


def test_dr_with_fitted_model_recovers_known_value() -> None:
    rng = np.random.default_rng(2)
    n, k = 3000, 3
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, k, n)
    mean_reward = 0.5 + 0.3 * x[:, 0] * (a == 1) - 0.2 * x[:, 1] * (a == 2)
    r = mean_reward + rng.normal(0, 0.5, n)
    target = np.tile([0.1, 0.6, 0.3], (n, 1))
    truth = 0.5  # every x-term has mean 0
    model = fit_ridge(categorical_features(x, a, (k,)), r)
    est = doubly_robust(
        r,
        target[np.arange(n), a],
        np.full(n, 1 / k),
        model.predict(categorical_features(x, a, (k,))),
        model.predict(categorical_expected_features(x, [target])),
    )
    assert est.ci_low[0] <= truth <= est.ci_high[0]
    assert est.stderr[0] < ips(r, target[np.arange(n), a], np.full(n, 1 / k)).stderr[0]


def test_reward_model_rejects_out_of_range_actions() -> None:
    with pytest.raises(OPEInputError, match="actions"):
        categorical_features(np.zeros((2, 1)), np.array([0, 5]), (3,))
