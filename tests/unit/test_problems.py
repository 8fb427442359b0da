from __future__ import annotations

import numpy as np
import pytest

from models.errors import UnknownProblemError
from models.observations import allocate_observation, fusion_scores, rank_observation, slot_observation, top_k
from models.problems import PROBLEMS, get_problem


def test_unknown_problem_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProblemError) as err:
        get_problem("ranking")
    assert "allocate, rank, slot" in str(err.value)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_spec_is_consistent(name: str) -> None:
    spec = get_problem(name)
    assert spec.main_signal in spec.signal_names
    slices = spec.observation_slices()
    assert max(s.stop for s in slices.values()) == spec.observation_size
    assert len(spec.default_action) == spec.action.flat_size
    for agent in spec.agents:
        assert agent.observation_size >= 1


def test_observation_builders_match_specs() -> None:
    rng = np.random.default_rng(0)
    b = 4
    rank = rank_observation([0, 1, 2, 1], rng.random((b, 6)), [0, 1, 2, 3], [0, 6, 12, 23], rng.random((b, 30, 6)))
    assert rank.shape == (b, get_problem("rank").observation_size) and rank.dtype == np.float32
    slot = slot_observation(
        [0] * b,
        rng.random((b, 6)),
        [1] * b,
        [5] * b,
        rng.random((b, 2)),
        rng.random((b, 6)),
        rng.random((b, 3)),
        rng.random((b, 10)),
    )
    assert slot.shape == (b, get_problem("slot").observation_size)
    alloc = allocate_observation([10.0] * b, [0.5] * b, [0.2] * b, [3] * b, [2] * b)
    assert alloc.shape == (b, get_problem("allocate").observation_size)
    with pytest.raises(ValueError, match="user_activity_group"):
        rank_observation([5], rng.random((1, 6)), [0], [0], rng.random((1, 3, 6)))


def test_fusion_and_top_k() -> None:
    signals = np.array([[[60.0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [120.0, 0, 0, 0, 0, 1]]], dtype=np.float32)
    scores = fusion_scores([[1, 0.5, 0, 0, 0, 0]], signals)
    np.testing.assert_allclose(scores, [[1.0, 0.5, 2.0]])
    assert top_k(scores, 2).tolist() == [[2, 0]]
