"""benchmarks/rank_signal_probe (issue 18, nineteenth round (d)): the two directions start at headroom_rank's
constant and end where they say, and the reported worlds are refused."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import headroom_rank as hr
from benchmarks import rank_signal_probe as probe


def _observations(n: int = 64) -> np.ndarray:
    from training.envs import make_batched

    sim = make_batched("rank", n, 3100, max_users=n, days=1, common_random_numbers=True)
    return np.asarray(sim.reset(None))


def test_both_directions_start_at_the_constant() -> None:
    obs = _observations()
    constant = np.tile(np.asarray(hr.REFERENCE_CONSTANT, np.float32), (obs.shape[0], 3))
    np.testing.assert_allclose(probe.state_dependent(0.0)(obs), constant, rtol=1e-6)
    np.testing.assert_allclose(probe.state_independent(0.0)(obs), constant, rtol=1e-6)


def test_the_state_dependent_direction_ends_at_the_rule_and_depends_on_the_state() -> None:
    obs = _observations()
    rule = np.clip(hr.observed_rule()(obs), 0.0, 1.0)
    np.testing.assert_allclose(probe.state_dependent(1.0)(obs), rule, rtol=1e-5, atol=1e-6)
    assert np.ptp(probe.state_dependent(0.5)(obs), axis=0).max() > 0.01  # differs between states


def test_the_state_independent_direction_scales_only_the_comment_weight() -> None:
    obs = _observations(4)
    played = probe.state_independent(1.0)(obs).reshape(4, 3, 6)
    expected = np.asarray(hr.REFERENCE_CONSTANT, np.float32).copy()
    expected[probe.COMMENT] *= 0.6
    np.testing.assert_allclose(played, np.broadcast_to(expected, played.shape), rtol=1e-6)


def test_reported_worlds_are_refused() -> None:
    with pytest.raises(ValueError, match="--worlds"):
        probe.main(["--worlds", "3100,1002"])
