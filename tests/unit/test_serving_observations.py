"""The single-request observation builders (serving's fast path) equal the batched builders bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from models.observations import (
    allocate_observation,
    allocate_observation_one,
    fusion_scores,
    live_sequence_features,
    rank_observation,
    rank_observation_one,
    slot_observation,
    slot_observation_one,
    top_k,
    top_k_one,
)
from models.problems import SLOT_LIVE_SEQUENCE_LENGTH, SLOT_PAGE_SIZE

N_CASES = 3000


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes(), np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))


def _magnitude(rng: np.random.Generator, size: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Positive values over many orders of magnitude, with some ties and zeros (rounding edge cases)."""
    x = 10.0 ** rng.uniform(-6, 6, size) * rng.uniform(0, 1, size)
    return np.where(rng.uniform(0, 1, size) < 0.05, 0.0, x)


def test_slot_single_equals_batched_row() -> None:
    rng = np.random.default_rng(1)
    for _ in range(N_CASES):
        group = int(rng.integers(0, 3))
        rates = _magnitude(rng, 6)
        depth = float(rng.integers(0, 100_000)) if rng.uniform() < 0.5 else float(rng.uniform(0, 1e5))
        hour = float(rng.uniform(0, 24))
        affinity = _magnitude(rng, 2)
        page = _magnitude(rng, SLOT_PAGE_SIZE)
        live = np.array([rng.uniform(0, 86_400), rng.uniform(0, 1), rng.uniform(0, 1e9)])
        sequence = _live_sequence(rng)
        batched = slot_observation(
            [group], rates[None], [depth], [hour], affinity[None], page[None], live[None], sequence[None]
        )
        _same_bits(slot_observation_one(group, rates, depth, hour, affinity, page, live, sequence), batched[0])


def _live_sequence(rng: np.random.Generator) -> np.ndarray:
    """(watch s, seconds since) pairs: seconds to weeks ago, padding (0, inf or a Unix time's worth), ties
    with the 7-day horizon, and exposures a clock skew puts in the future."""
    k = SLOT_LIVE_SEQUENCE_LENGTH
    watch = np.where(rng.uniform(0, 1, k) < 0.4, 0.0, rng.exponential(300.0, k))
    since = 10.0 ** rng.uniform(0, 6.5, k)
    since = np.where(rng.uniform(0, 1, k) < 0.1, rng.choice([np.inf, 1.7e9, 168 * 3600.0, -5.0]), since)
    return np.stack([watch, since], axis=1).reshape(-1)


def test_live_sequence_is_zero_padded_and_fresher_is_larger() -> None:
    hour = 3600.0
    pairs = [(120.0, 0.0), (60.0, hour), (30.0, 24 * hour), (90.0, 168 * hour), (0.0, np.inf)]
    obs = live_sequence_features(np.array(pairs).reshape(1, -1))[0].reshape(-1, 2)
    assert obs[:3, 0] == pytest.approx([2.0, 1.0, 0.5])
    assert obs[0, 1] == 1.0 and 1.0 > obs[1, 1] > obs[2, 1] > 0.0
    assert obs[1, 1] == pytest.approx(1.0 - np.log(2.0) / np.log(169.0))
    assert not obs[3:].any()  # as old as the 7-day horizon, and absent: (0, 0)


def test_allocate_single_equals_batched_row() -> None:
    rng = np.random.default_rng(2)
    for _ in range(N_CASES):
        value = float(_magnitude(rng)) * 1e3
        load, budget = float(rng.uniform(0, 100)), float(rng.uniform(0, 100))
        hour, group = float(rng.uniform(0, 24)), int(rng.integers(0, 3))
        batched = allocate_observation([value], [load], [budget], [hour], [group])
        _same_bits(allocate_observation_one(value, load, budget, hour, group), batched[0])


@pytest.mark.parametrize("n", [1, 2, 7, 50, 200, 2000])
def test_rank_single_equals_batched_row(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(N_CASES // 10):
        signals = np.concatenate(
            [rng.uniform(0, 86_400, (n, 1)), rng.uniform(0, 1, (n, 5))], axis=1, dtype=np.float64
        ).astype(np.float32)
        group, rates = int(rng.integers(0, 3)), _magnitude(rng, 6)
        depth, hour = float(rng.integers(0, 100_000)), float(rng.uniform(0, 24))
        batched = rank_observation([group], rates[None], [depth], [hour], signals[None])
        _same_bits(rank_observation_one(group, rates, depth, hour, signals), batched[0])


def test_hours_on_a_fine_grid_match() -> None:
    # Every minute (and a few sub-minute offsets) of the day: the sin/cos features are the batched ones.
    hours = np.concatenate([np.arange(0, 24, 1 / 60), np.arange(0, 24, 1 / 60) + 1e-4])
    rates = np.full(6, 0.1)
    for hour in hours.tolist():
        batched = allocate_observation([5.0], [0.5], [0.5], [hour], [1])
        _same_bits(allocate_observation_one(5.0, 0.5, 0.5, hour, 1), batched[0])
        one = rank_observation_one(1, rates, 3.0, hour, np.ones((4, 6), np.float32))
        _same_bits(one, rank_observation([1], rates[None], [3.0], [hour], np.ones((1, 4, 6), np.float32))[0])


@pytest.mark.parametrize("n", [1, 5, 50, 200, 2000])
def test_top_k_single_equals_batched_row(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    for _ in range(200):
        signals = rng.uniform(0, 1, (1, n, 6)).astype(np.float32)
        if rng.uniform() < 0.3:
            signals = np.round(signals, 1)  # ties: the stable order must match too
        scores = fusion_scores(rng.uniform(0, 1, (1, 6)).astype(np.float32), signals)
        k = int(rng.integers(1, n + 3))
        np.testing.assert_array_equal(top_k_one(scores[0], k), top_k(scores, k)[0])


def test_single_builders_reject_what_the_batched_ones_reject() -> None:
    rates = np.zeros(6)
    with pytest.raises(ValueError, match="user_activity_group"):
        allocate_observation_one(1.0, 0.5, 0.5, 12.0, 3)
    with pytest.raises(ValueError, match="user_recent_rates"):
        rank_observation_one(0, np.zeros(5), 0.0, 12.0, np.ones((3, 6)))
    with pytest.raises(ValueError, match="candidate_signals"):
        rank_observation_one(0, rates, 0.0, 12.0, np.ones((0, 6)))
    with pytest.raises(ValueError, match="page_video_watch_time"):
        slot_observation_one(0, rates, 0.0, 12.0, np.zeros(2), np.zeros(SLOT_PAGE_SIZE - 1), np.zeros(3), np.zeros(10))
    with pytest.raises(ValueError, match="user_live_sequence"):
        slot_observation_one(0, rates, 0.0, 12.0, np.zeros(2), np.zeros(SLOT_PAGE_SIZE), np.zeros(3), np.zeros(9))
