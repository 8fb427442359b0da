"""benchmarks/rank_es_probe (issue 18, nineteenth round (e)): the paired runs meet the same users, an update moves
W toward the better side of each pair, and the reported seeds are refused."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import rank_es_probe as probe


def test_the_same_user_seed_replays_the_same_users() -> None:
    constant = np.full(18, 0.5, np.float32)
    play = lambda o: np.tile(constant, (len(o), 1))  # noqa: E731
    a = probe.run_users(3100, 61_000, play, 8)
    b = probe.run_users(3100, 61_000, play, 8)
    np.testing.assert_array_equal(a["watch"], b["watch"])
    c = probe.run_users(3100, 61_001, play, 8)
    assert not np.array_equal(a["watch"], c["watch"])


def test_es_starts_at_the_constant_and_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    constant = np.full(18, 0.5, np.float32)
    monkeypatch.setattr(probe, "seed_constant", lambda s: constant)
    w, policy = probe.es(100, iterations=0, pairs=4, sigma=0.1, lr=1.0, eta=2.0)
    obs = np.random.default_rng(0).normal(size=(5, probe.N_OBS))
    np.testing.assert_array_equal(policy(obs), np.tile(constant, (5, 1)))  # W = 0: the warm start
    w, policy = probe.es(100, iterations=1, pairs=4, sigma=0.1, lr=1.0, eta=2.0)
    assert np.abs(w).sum() > 0 and np.ptp(policy(obs), axis=0).max() > 0  # one update: state-dependent


def test_reported_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="--seeds"):
        probe.main(["--seeds", "100,3"])
