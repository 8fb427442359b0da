"""PDIS, weighted PDIS and sequential DR on hand-computed episodes."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope.errors import OPEInputError
from training.ope.sequential import pad_episodes, pdis, sequential_doubly_robust, wpdis

# Two episodes: the first has 2 steps, the second 1 (padded). One signal, γ = 0.5.
REWARDS = np.array([[1.0, 2.0], [3.0, 0.0]])
MASK = np.array([[True, True], [True, False]])
TARGET = np.array([[0.5, 1.0], [0.25, 0.0]])
BEHAVIOUR = np.array([[0.25, 0.5], [0.5, 0.0]])  # step ratios [[2, 2], [0.5, pad]]
GAMMA = [0.5]


def test_pdis_hand_computed() -> None:
    # episode 1: ρ = [2, 4] → 2·1 + 0.5·4·2 = 6;  episode 2: ρ = [0.5] → 1.5. Mean 3.75.
    assert pdis(REWARDS, MASK, TARGET, BEHAVIOUR, GAMMA).value[0] == pytest.approx(3.75)


def test_wpdis_hand_computed() -> None:
    # t=0: (2·1 + 0.5·3) / 2.5 = 1.4;  t=1: (4·2 + 0.5·0) / (4 + 0.5) = 16/9 (episode 2 carries ρ=0.5).
    assert wpdis(REWARDS, MASK, TARGET, BEHAVIOUR, GAMMA).value[0] == pytest.approx(1.4 + 0.5 * 16 / 9)


def test_sequential_dr_hand_computed_and_reductions() -> None:
    q = np.array([[1.0, 1.0], [2.0, 0.0]])
    v = np.array([[1.5, 0.5], [1.0, 0.0]])
    # ep1: t0: 2(1−1) + 1·1.5 = 1.5; t1: 4(2−1) + 2·0.5 = 5 → 1.5 + 0.5·5 = 4
    # ep2: t0: 0.5(3−2) + 1·1.0 = 1.5.  Mean 2.75.
    est = sequential_doubly_robust(REWARDS, MASK, TARGET, BEHAVIOUR, GAMMA, q[..., None], v[..., None])
    assert est.value[0] == pytest.approx(2.75)
    zeros = np.zeros((2, 2, 1))
    assert sequential_doubly_robust(REWARDS, MASK, TARGET, BEHAVIOUR, GAMMA, zeros, zeros).value[0] == pytest.approx(
        3.75
    )


def test_on_policy_pdis_and_wpdis_equal_the_mean_discounted_return() -> None:
    rng = np.random.default_rng(0)
    n, t = 200, 5
    lengths = rng.integers(1, t + 1, n)
    mask = np.arange(t)[None] < lengths[:, None]
    r = rng.normal(size=(n, t, 2)) * mask[..., None]
    p = rng.uniform(0.1, 1.0, (n, t))
    gammas = np.array([0.9, 0.5])
    returns = (r * gammas[None, None] ** np.arange(t)[None, :, None]).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(pdis(r, mask, p, p, gammas).value, returns, atol=1e-12)
    np.testing.assert_allclose(wpdis(r, mask, p, p, gammas).value, returns, atol=1e-12)


def test_episodes_with_missing_propensity_are_excluded_and_counted() -> None:
    b = BEHAVIOUR.copy()
    b[0, 1] = np.nan
    est = pdis(REWARDS, MASK, TARGET, b, GAMMA)
    assert est.n_rows == 1 and est.value[0] == pytest.approx(1.5)
    assert est.diagnostics is not None and est.diagnostics.n_missing_propensity == 1


def test_pad_episodes_groups_contiguous_transitions() -> None:
    mask, (r,) = pad_episodes(np.array([7, 7, 7, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(mask, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(r, [[1, 2, 3], [4, 0, 0]])
    with pytest.raises(OPEInputError, match="contiguous"):
        pad_episodes(np.array([1, 2, 1]), np.zeros(3))


def test_bad_discounts_and_gapped_masks_are_rejected() -> None:
    with pytest.raises(OPEInputError, match="discounts"):
        pdis(REWARDS, MASK, TARGET, BEHAVIOUR, [0.5, 0.5])
    with pytest.raises(OPEInputError, match="mask"):
        pdis(REWARDS, np.array([[False, True], [True, False]]), TARGET, BEHAVIOUR, GAMMA)
