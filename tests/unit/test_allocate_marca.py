"""serving/allocate_marca.py's fused sampler against the generic one (serving/exploration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.allocate_marca import AGENT_ACTIONS, sample_adjusted
from serving.exploration import ExplorationConfig, sample_multi_discrete

N_SCORES = sum(AGENT_ACTIONS)


@pytest.mark.parametrize(
    "cfg",
    [
        ExplorationConfig(temperature=1.0, epsilon=0.0),
        ExplorationConfig(temperature=1.0, epsilon=0.05),
        ExplorationConfig(temperature=0.3, epsilon=0.2),
        ExplorationConfig(temperature=0.0, epsilon=0.1),
        ExplorationConfig(temperature=0.0, epsilon=0.0),
        ExplorationConfig(temperature=2.5, epsilon=1.0),
    ],
)
def test_fused_sampler_matches_generic(cfg: ExplorationConfig) -> None:
    data = np.random.default_rng(7)
    for i in range(1000):
        scores = data.normal(0.0, 3.0, N_SCORES)
        if i % 10 == 0:
            scores[:4] = scores[0]  # ties: both take the first maximum
        costs = data.uniform(0.0, 2.0, N_SCORES)
        scale = float(data.uniform(0.0, 4.0))
        adjusted = np.asarray([s - scale * c for s, c in zip(scores.tolist(), costs.tolist(), strict=True)])
        want_a, want_p = sample_multi_discrete(adjusted, AGENT_ACTIONS, cfg, np.random.default_rng(i))
        got_a, got_p = sample_adjusted(scores.tolist(), costs.tolist(), scale, cfg, np.random.default_rng(i))
        assert got_a == want_a, i
        assert got_p == pytest.approx(want_p, rel=1e-12, abs=1e-15), i


def test_fused_sampler_uses_the_same_draws() -> None:
    """Same rng state after the call: one uniform per agent when exploring, none when greedy."""
    scores, costs = [0.0] * N_SCORES, [1.0] * N_SCORES
    for cfg, used in (
        (ExplorationConfig(temperature=1.0), len(AGENT_ACTIONS)),
        (ExplorationConfig(temperature=0.0), 0),
    ):
        rng = np.random.default_rng(3)
        sample_adjusted(scores, costs, 1.0, cfg, rng)
        ref = np.random.default_rng(3)
        ref.random(used)
        assert rng.random() == ref.random()


def test_uniform_scores_give_uniform_propensity() -> None:
    actions, p = sample_adjusted([0.0] * N_SCORES, [0.0] * N_SCORES, 1.0, ExplorationConfig(), np.random.default_rng(0))
    assert len(actions) == len(AGENT_ACTIONS)
    assert all(0 <= a < n for a, n in zip(actions, AGENT_ACTIONS, strict=True))
    assert p == pytest.approx(1.0 / float(np.prod(AGENT_ACTIONS)))
