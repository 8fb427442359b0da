"""Fitted Q evaluation: exact recovery on a tiny MDP and agreement with DM on one-step data."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.fqe import FQEConfig, fit_fqe, fqe
from training.ope.one_step import direct_method
from training.ope.reward_models import categorical_expected_features, categorical_features, fit_ridge


def _two_step_logs(n_episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Two steps per episode, state feature = [is_first_step]; reward = action (0/1); behaviour uniform."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (n_episodes, 2))
    x = np.tile(np.array([[1.0], [0.0]]), (n_episodes, 1))
    actions = a.reshape(-1)
    return {
        "x": x,
        "a": actions,
        "r": np.c_[actions.astype(float), 2.0 * actions],
        "next_x": np.tile(np.array([[0.0], [0.0]]), (n_episodes, 1)),
        "done": np.tile([0.0, 1.0], n_episodes),
        "episode": np.repeat(np.arange(n_episodes), 2),
    }


def test_fqe_recovers_the_value_of_always_action_one() -> None:
    d = _two_step_logs(40, 0)
    always_one = np.tile([0.0, 1.0], (len(d["a"]), 1))
    phi = categorical_features(d["x"], d["a"], (2,))
    next_phi = categorical_expected_features(d["next_x"], [always_one])
    init_x = np.ones((40, 1))
    init_phi = categorical_expected_features(init_x, [np.tile([0.0, 1.0], (40, 1))])
    gammas = np.array([0.5, 0.9])
    est, model = fqe(
        phi,
        d["r"],
        next_phi,
        d["done"],
        gammas,
        init_phi,
        d["episode"],
        np.arange(40),
        signals=("a", "b"),
        cfg=FQEConfig(l2=1e-9, n_bootstrap=20),
    )
    # V = r_0 + γ r_1 with r = 1 (signal a) or 2 (signal b) at both steps
    np.testing.assert_allclose(est.value, [1.5, 2 * 1.9], atol=1e-6)
    assert est.ci_method == "bootstrap" and np.all(est.ci_low <= est.value + 1e-9)
    # Q(s_0, action 0) = 0 + γ·1 for signal a
    q = model.predict(categorical_features(np.ones((1, 1)), np.zeros(1), (2,)))
    assert q[0, 0] == pytest.approx(0.5, abs=1e-6)


def test_fqe_on_one_step_data_equals_the_direct_method() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    a = rng.integers(0, 3, 300)
    r = x[:, 0] * (a == 1) + rng.normal(0, 0.1, 300)
    target = np.tile([0.2, 0.5, 0.3], (300, 1))
    phi = categorical_features(x, a, (3,))
    target_phi = categorical_expected_features(x, [target])
    est, _ = fqe(
        phi,
        r,
        np.zeros_like(phi),
        np.ones(300),
        [0.0],
        target_phi,
        np.arange(300),
        np.arange(300),
        cfg=FQEConfig(l2=1e-6, n_bootstrap=20),
    )
    dm = direct_method(fit_ridge(phi, r, l2=1e-6).predict(target_phi))
    assert est.value[0] == pytest.approx(dm.value[0], abs=1e-6)


def test_fqe_config_and_shapes_are_validated() -> None:
    with pytest.raises(OPEInputError, match="n_bootstrap"):
        FQEConfig(n_bootstrap=5)
    with pytest.raises(OPEInputError, match="discounts"):
        fit_fqe(np.zeros((2, 2)), np.zeros(2), np.zeros((2, 2)), np.zeros(2), [1.0])
