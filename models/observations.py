"""Observation builders and the fusion cascade, shared by simulators and serving.

The simulators (training/envs) and the decision API (serving) both call these
functions, so a policy sees exactly the same numbers in training and in
production. Everything is batched numpy: the leading axis is the batch (B).
Field order and sizes follow `models/problems.py`.
"""

from __future__ import annotations

from array import array

import numpy as np
import numpy.typing as npt

from models.problems import (
    ACTIVITY_GROUPS,
    ALLOCATE,
    ALLOCATE_DEFAULT_ENTRY_POINT,
    ALLOCATE_DEFAULT_HISTORY_LENGTH,
    ALLOCATE_ENTRY_POINTS,
    PREDICTED_SIGNALS,
    RANK,
    RANK_SESSION_SIGNAL_DEFAULTS,
    SLOT,
    SLOT_LIVE_SEQUENCE_HORIZON_H,
    SLOT_LIVE_SEQUENCE_LENGTH,
)

FloatArray = npt.NDArray[np.float32]

# Predicted watch time arrives in seconds; the other five signals are
# probabilities. Dividing watch time by 60 puts all six on a comparable scale
# before fusion and in observations.
SIGNAL_SCALE: FloatArray = np.array([1.0 / 60.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)


def _as_batch(x: npt.ArrayLike, width: int, name: str) -> FloatArray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1 and width == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name}: expected shape (batch, {width}), got {arr.shape}")
    return arr


def activity_one_hot(group: npt.ArrayLike) -> FloatArray:
    """Activity group index (0=low, 1=medium, 2=high), shape (B,) → one-hot (B, 3)."""
    idx = np.asarray(group, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(ACTIVITY_GROUPS)):
        raise ValueError(f"user_activity_group: expected integers in [0, {len(ACTIVITY_GROUPS)}), got {idx}")
    out = np.zeros((idx.shape[0], len(ACTIVITY_GROUPS)), dtype=np.float32)
    out[np.arange(idx.shape[0]), idx] = 1.0
    return out


def entry_point_one_hot(entry_point: npt.ArrayLike) -> FloatArray:
    """Entry point index (ALLOCATE_ENTRY_POINTS order), shape (B,) → one-hot (B, 3)."""
    idx = np.asarray(entry_point, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(ALLOCATE_ENTRY_POINTS)):
        raise ValueError(
            f"entry_point: expected integers in [0, {len(ALLOCATE_ENTRY_POINTS)}) "
            f"({', '.join(ALLOCATE_ENTRY_POINTS)}), got {idx}"
        )
    out = np.zeros((idx.shape[0], len(ALLOCATE_ENTRY_POINTS)), dtype=np.float32)
    out[np.arange(idx.shape[0]), idx] = 1.0
    return out


def hour_features(hour: npt.ArrayLike) -> FloatArray:
    """Hour of day in [0, 24), shape (B,) → (sin, cos), shape (B, 2)."""
    angle = 2.0 * np.pi * np.asarray(hour, dtype=np.float32) / 24.0
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def candidate_stats(candidate_signals: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Predicted signals (B, N, 6) → scaled per-signal mean and std over the pool, each (B, 6)."""
    sig = np.asarray(candidate_signals, dtype=np.float32)
    if sig.ndim != 3 or sig.shape[2] != len(PREDICTED_SIGNALS):
        raise ValueError(f"candidate_signals: expected shape (batch, n_candidates, 6), got {sig.shape}")
    if sig.shape[1] == 0:
        raise ValueError("candidate_signals: at least one candidate is required")
    scaled = sig * SIGNAL_SCALE
    return scaled.mean(axis=1), scaled.std(axis=1)


def rank_observation(
    user_activity_group: npt.ArrayLike,
    user_recent_rates: npt.ArrayLike,
    session_depth: npt.ArrayLike,
    hour_of_day: npt.ArrayLike,
    candidate_signals: npt.ArrayLike,
    session_signals: npt.ArrayLike | None = None,
) -> FloatArray:
    """The `rank` observation (B, 27) of one stage, from its candidate pool (B, N, 6).

    session_signals (B, 3): last pages' completion, skip rate, minutes in session
    (`models.problems.RANK_SESSION_SIGNAL_DEFAULTS` for every row when absent).
    """
    mean, std = candidate_stats(candidate_signals)
    batch = mean.shape[0]
    if session_signals is None:
        session_signals = np.broadcast_to(np.asarray(RANK_SESSION_SIGNAL_DEFAULTS, np.float32), (batch, 3))
    session = _as_batch(session_signals, 3, "session_signals") * _SESSION_SCALE
    obs = np.concatenate(
        [
            activity_one_hot(user_activity_group),
            _as_batch(user_recent_rates, 6, "user_recent_rates"),
            _as_batch(np.asarray(session_depth, dtype=np.float32) / 10.0, 1, "session_depth"),
            hour_features(hour_of_day),
            mean,
            std,
            session,
        ],
        axis=1,
    )
    assert obs.shape[1] == RANK.observation_size
    return obs


# session_signals: completion and skip rate as they are, minutes / 10.
_SESSION_SCALE: FloatArray = np.array([1.0, 1.0, 0.1], dtype=np.float32)


def fusion_scores(weights: npt.ArrayLike, candidate_signals: npt.ArrayLike) -> FloatArray:
    """Score = Σ_j w_j · scaled signal_j. weights (B, 6), signals (B, N, 6) → scores (B, N)."""
    w = np.asarray(weights, dtype=np.float32)
    sig = np.asarray(candidate_signals, dtype=np.float32) * SIGNAL_SCALE
    scores: FloatArray = np.einsum("bnj,bj->bn", sig, w)
    return scores


def top_k(scores: FloatArray, k: int) -> npt.NDArray[np.int64]:
    """Indices (B, k) of the k best scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


# The live sequence's freshness: 1 − log1p(hours since) / log1p(horizon), one float32 constant for both builders.
_SEQUENCE_HORIZON_H = np.float32(SLOT_LIVE_SEQUENCE_HORIZON_H)
_LOG1P_SEQUENCE_HORIZON = np.log1p(_SEQUENCE_HORIZON_H)


def live_sequence_features(user_live_sequence: npt.ArrayLike) -> FloatArray:
    """The user's last K live exposures (B, 2K) → the observation's `user_live_sequence` (B, 2K).

    Input pairs, most recent first: (live watch time in seconds, seconds since the exposure);
    an absent exposure is (0, ≥ the horizon) — e.g. (0, inf), or a Unix time of 0 turned into
    seconds since. Output pairs: (watch minutes, freshness 1 − log1p(hours) / log1p(168)); an
    exposure as old as the 7-day horizon (or absent) is (0, 0), so the sequence is zero-padded.
    """
    seq = _as_batch(user_live_sequence, 2 * SLOT_LIVE_SEQUENCE_LENGTH, "user_live_sequence")
    watch, since = seq[:, 0::2], seq[:, 1::2]
    hours = np.minimum(np.maximum(since, 0.0) / 3600.0, _SEQUENCE_HORIZON_H)
    recent = hours < _SEQUENCE_HORIZON_H
    minutes = np.where(recent, watch / 60.0, 0.0)
    freshness = np.where(recent, 1.0 - np.log1p(hours) / _LOG1P_SEQUENCE_HORIZON, 0.0)
    out: FloatArray = np.stack([minutes, freshness], axis=2).reshape(seq.shape[0], -1).astype(np.float32)
    return out


def slot_observation(
    user_activity_group: npt.ArrayLike,
    user_recent_rates: npt.ArrayLike,
    session_depth: npt.ArrayLike,
    hour_of_day: npt.ArrayLike,
    user_live_affinity: npt.ArrayLike,
    page_video_watch_time: npt.ArrayLike,
    live_candidate: npt.ArrayLike,
    user_live_sequence: npt.ArrayLike,
) -> FloatArray:
    """The `slot` observation (B, 33).

    page_video_watch_time is in seconds (B, K); live_candidate is
    (predicted live watch time in seconds, quality in [0, 1], audience count), (B, 3);
    user_live_sequence is (B, 10): the last 5 live exposures as (watch seconds, seconds since),
    see `live_sequence_features`.
    """
    live = _as_batch(live_candidate, 3, "live_candidate")
    live_scaled = live * np.array([1.0 / 60.0, 1.0, 1.0 / 1000.0], dtype=np.float32)
    page = _as_batch(page_video_watch_time, int(SLOT.settings["page_size"]), "page_video_watch_time") / 60.0
    obs = np.concatenate(
        [
            activity_one_hot(user_activity_group),
            _as_batch(user_recent_rates, 6, "user_recent_rates"),
            _as_batch(np.asarray(session_depth, dtype=np.float32) / 10.0, 1, "session_depth"),
            hour_features(hour_of_day),
            _as_batch(user_live_affinity, 2, "user_live_affinity"),
            page,
            live_scaled,
            live_sequence_features(user_live_sequence),
        ],
        axis=1,
    ).astype(np.float32)
    assert obs.shape[1] == SLOT.observation_size
    return obs


def allocate_observation(
    request_value: npt.ArrayLike,
    system_load: npt.ArrayLike,
    budget_utilisation: npt.ArrayLike,
    hour_of_day: npt.ArrayLike,
    user_activity_group: npt.ArrayLike,
    user_history_length: npt.ArrayLike | None = None,
    entry_point: npt.ArrayLike | None = None,
) -> FloatArray:
    """The `allocate` observation (B, 12); request_value in cents, shape (B,).

    user_history_length (past interactions, ≥ 0) and entry_point (index into
    ALLOCATE_ENTRY_POINTS) are optional: when absent, every row gets the
    defaults of models/problems.py (callers written before these features existed).
    """
    batch = np.asarray(request_value).shape[0] if np.ndim(request_value) else 1
    value = np.log1p(np.maximum(np.asarray(request_value, dtype=np.float32), 0.0)) / 5.0
    if user_history_length is None:
        user_history_length = np.full(batch, ALLOCATE_DEFAULT_HISTORY_LENGTH, np.float32)
    if entry_point is None:
        entry_point = np.full(batch, ALLOCATE_ENTRY_POINTS.index(ALLOCATE_DEFAULT_ENTRY_POINT), np.int64)
    history = np.log1p(np.maximum(np.asarray(user_history_length, dtype=np.float32), 0.0)) / 8.0
    obs = np.concatenate(
        [
            _as_batch(value, 1, "request_value"),
            _as_batch(system_load, 1, "system_load"),
            _as_batch(budget_utilisation, 1, "budget_utilisation"),
            hour_features(hour_of_day),
            activity_one_hot(user_activity_group),
            _as_batch(history, 1, "user_history_length"),
            entry_point_one_hot(entry_point),
        ],
        axis=1,
    ).astype(np.float32)
    assert obs.shape[1] == ALLOCATE.observation_size
    return obs


# ---------------------------------------------------------------------------
# One request at a time (the decision API)
# ---------------------------------------------------------------------------
# The builders above called with a batch of one spend most of their time in
# numpy's per-call overhead (~60 µs for a rank stage, ~40 µs for slot), a large
# share of a decision. These return row 0 of the batched builders, bit for bit
# (tests/unit/test_serving_observations.py checks it on random inputs):
# - transcendental functions (sin, cos, log1p) and the pool's mean/std still go
#   through the same numpy calls on the same float32 values;
# - the rest is Python float arithmetic on float32 values, rounded to float32
#   once at the end. One +, -, * or / of two float32 values done in float64 and
#   then rounded to float32 gives the correctly rounded float32 result (float64
#   has more than 2 × 24 + 2 significand bits), which is what numpy computes.
# Inputs are validated as in the batched builders (sizes, activity group range).
_ONE_HOT: tuple[tuple[float, ...], ...] = tuple(
    tuple(1.0 if j == i else 0.0 for j in range(len(ACTIVITY_GROUPS))) for i in range(len(ACTIVITY_GROUPS))
)
_ENTRY_ONE_HOT: tuple[tuple[float, ...], ...] = tuple(
    tuple(1.0 if j == i else 0.0 for j in range(len(ALLOCATE_ENTRY_POINTS))) for i in range(len(ALLOCATE_ENTRY_POINTS))
)
_SESSION_SCALE_ONE: tuple[float, ...] = tuple(_SESSION_SCALE.tolist())
_LIVE_SCALE: tuple[float, ...] = tuple(np.array([1.0 / 60.0, 1.0, 1.0 / 1000.0], dtype=np.float32).tolist())


def _f32(values: npt.ArrayLike, width: int, name: str) -> list[float]:
    """Values rounded to float32 (as Python floats), checked for size."""
    arr = values if isinstance(values, np.ndarray) and values.dtype == np.float32 else np.asarray(values, np.float32)
    out: list[float] = arr.reshape(-1).tolist()
    if len(out) != width:
        raise ValueError(f"{name}: expected {width} values, got {len(out)}")
    return out


def _one_hot(group: int) -> tuple[float, ...]:
    if not 0 <= group < len(ACTIVITY_GROUPS):
        raise ValueError(f"user_activity_group: expected integers in [0, {len(ACTIVITY_GROUPS)}), got {group}")
    return _ONE_HOT[group]


def _depth(session_depth: float) -> float:
    # float32(depth) / 10 in float32 (see the note above: one division, rounded once at the end).
    return float(np.float32(session_depth)) / 10.0


# hour → (sin, cos) from hour_features itself: requests repeat a small set of hours
# (minutes of the day, at most), and the lookup is ~50x cheaper than the numpy calls.
_HOURS: dict[float, tuple[float, float]] = {}
_HOURS_MAX = 8192


def _hour(hour_of_day: float) -> tuple[float, float]:
    key = float(hour_of_day)
    pair = _HOURS.get(key)
    if pair is None:
        sin, cos = hour_features(np.array([key], dtype=np.float32))[0].tolist()
        if len(_HOURS) >= _HOURS_MAX:
            _HOURS.clear()  # rare: more distinct hours than a day has minutes (×5)
        pair = _HOURS[key] = (sin, cos)
    return pair


def rank_observation_one(
    user_activity_group: int,
    user_recent_rates: npt.ArrayLike,
    session_depth: float,
    hour_of_day: float,
    candidate_signals: npt.ArrayLike,
    session_signals: npt.ArrayLike | None = None,
) -> FloatArray:
    """`rank_observation` for one request: pool (N, 6) → observation (27,), equal to the batched row."""
    sig = np.asarray(candidate_signals, dtype=np.float32)
    if sig.ndim != 2 or sig.shape[1] != len(PREDICTED_SIGNALS):
        raise ValueError(f"candidate_signals: expected shape (n_candidates, 6), got {sig.shape}")
    if sig.shape[0] == 0:
        raise ValueError("candidate_signals: at least one candidate is required")
    # The same reductions as candidate_stats: over the pool axis of a (1, N, 6) array.
    mean, std = candidate_stats(sig[None, :, :])
    head = [
        *_one_hot(int(user_activity_group)),
        *_f32(user_recent_rates, 6, "user_recent_rates"),
        _depth(session_depth),
        *_hour(hour_of_day),
    ]
    session = _f32(RANK_SESSION_SIGNAL_DEFAULTS if session_signals is None else session_signals, 3, "session_signals")
    tail = [v * s for v, s in zip(session, _SESSION_SCALE_ONE, strict=True)]
    obs = np.concatenate([np.array(head, dtype=np.float32), mean[0], std[0], np.array(tail, dtype=np.float32)])
    assert obs.shape[0] == RANK.observation_size
    return obs


def slot_observation_one(
    user_activity_group: int,
    user_recent_rates: npt.ArrayLike,
    session_depth: float,
    hour_of_day: float,
    user_live_affinity: npt.ArrayLike,
    page_video_watch_time: npt.ArrayLike,
    live_candidate: npt.ArrayLike,
    user_live_sequence: npt.ArrayLike,
) -> FloatArray:
    """`slot_observation` for one request → observation (33,), equal to the batched row."""
    page = _f32(page_video_watch_time, int(SLOT.settings["page_size"]), "page_video_watch_time")
    live = _f32(live_candidate, 3, "live_candidate")
    seq = _f32(user_live_sequence, 2 * SLOT_LIVE_SEQUENCE_LENGTH, "user_live_sequence")
    values = [
        *_one_hot(int(user_activity_group)),
        *_f32(user_recent_rates, 6, "user_recent_rates"),
        _depth(session_depth),
        *_hour(hour_of_day),
        *_f32(user_live_affinity, 2, "user_live_affinity"),
        *[p / 60.0 for p in page],
        *[v * s for v, s in zip(live, _LIVE_SCALE, strict=True)],  # float32 × float32 is exact in float64
        *_live_sequence_one(seq),
    ]
    obs = np.array(values, dtype=np.float32)
    assert obs.shape[0] == SLOT.observation_size
    return obs


_HORIZON_ONE = float(_SEQUENCE_HORIZON_H)
_LOG1P_HORIZON_ONE = float(_LOG1P_SEQUENCE_HORIZON)


def _live_sequence_one(seq: list[float]) -> list[float]:
    """`live_sequence_features` of one row (float32 values as Python floats). Where numpy rounds an
    intermediate to float32, `array("f", ...)` does the same for a whole list at once; log1p goes through
    numpy on the exposures present only (none for a user without history: no numpy call at all)."""
    watch, since = seq[0::2], seq[1::2]
    hours = array("f", [max(s, 0.0) / 3600.0 for s in since]).tolist()
    present = [i for i, h in enumerate(hours) if h < _HORIZON_ONE]  # min(h, horizon) < horizon
    out = [0.0] * len(seq)
    if present:
        logs: list[float] = np.log1p(np.array([hours[i] for i in present], dtype=np.float32)).tolist()
        ratios = array("f", [lg / _LOG1P_HORIZON_ONE for lg in logs]).tolist()
        for i, ratio in zip(present, ratios, strict=True):
            out[2 * i] = watch[i] / 60.0
            out[2 * i + 1] = 1.0 - ratio
    return out


def allocate_observation_one(
    request_value: float,
    system_load: float,
    budget_utilisation: float,
    hour_of_day: float,
    user_activity_group: int,
    user_history_length: float = ALLOCATE_DEFAULT_HISTORY_LENGTH,
    entry_point: int = ALLOCATE_ENTRY_POINTS.index(ALLOCATE_DEFAULT_ENTRY_POINT),
) -> FloatArray:
    """`allocate_observation` for one request → observation (12,), equal to the batched row."""
    value = np.log1p(np.maximum(np.array([request_value, user_history_length], dtype=np.float32), 0.0))
    if not 0 <= int(entry_point) < len(ALLOCATE_ENTRY_POINTS):
        raise ValueError(
            f"entry_point: expected integers in [0, {len(ALLOCATE_ENTRY_POINTS)}) "
            f"({', '.join(ALLOCATE_ENTRY_POINTS)}), got {entry_point}"
        )
    values = [
        float(value[0]) / 5.0,
        float(np.float32(system_load)),
        float(np.float32(budget_utilisation)),
        *_hour(hour_of_day),
        *_one_hot(int(user_activity_group)),
        float(value[1]) / 8.0,
        *_ENTRY_ONE_HOT[int(entry_point)],
    ]
    obs = np.array(values, dtype=np.float32)
    assert obs.shape[0] == ALLOCATE.observation_size
    return obs


def top_k_one(scores: FloatArray, k: int) -> npt.NDArray[np.int64]:
    """`top_k` for one row: scores (N,) → the k best indices, best first (equal to the batched row)."""
    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    order = np.argsort(-scores[part], kind="stable")
    return part[order].astype(np.int64)
