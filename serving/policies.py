"""From observation to action, per problem: the cascade for `rank`, one slot for `slot`, per-stage choices for `allocate`.

`PolicyRunner`s are plain async functions over numpy: they build the
observation with `models/observations.py` (the same code the simulators use),
ask a scorer for the policy's output, and turn it into an action with its
propensity (serving/exploration.py). With `scorer=None` they answer with the
problem's default policy (models/problems.py), deterministically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.observations import (
    allocate_observation_one,
    fusion_scores,
    rank_observation_one,
    slot_observation_one,
    top_k_one,
)
from models.problems import (
    ALLOCATE,
    ALLOCATE_CHANNELS,
    ALLOCATE_DEFAULT_ENTRY_POINT,
    ALLOCATE_DEFAULT_HISTORY_LENGTH,
    ALLOCATE_ENTRY_POINTS,
    ALLOCATE_MODEL_TIERS,
    ALLOCATE_QUEUE_LENGTHS_PRE_RANK,
    ALLOCATE_QUEUE_LENGTHS_RANK,
    PREDICTED_SIGNALS,
    RANK,
    RANK_SESSION_SIGNAL_DEFAULTS,
    RANK_STAGES,
    SLOT,
    BoxAction,
    MultiDiscreteAction,
)
from serving.errors import InferenceError
from serving.exploration import ExplorationConfig, sample_box, sample_discrete, sample_multi_discrete

FloatArray = npt.NDArray[np.float32]
# agent name (None = the problem's joint model) → observation [1, obs] → outputs by name
Scorer = Callable[[str | None, FloatArray], Awaitable[dict[str, FloatArray]]]

N_SIGNALS = len(PREDICTED_SIGNALS)


@dataclass(frozen=True)
class Decision:
    """One decision: the flat action and the probability it was taken with, plus what the response shows."""

    action: list[float]
    observation: list[float]
    propensity: float | None = None
    log_density: float | None = None
    candidate_ids: list[str] | None = None
    details: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# rank: the fusion cascade
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RankInputs:
    user_activity_group: int
    user_recent_rates: FloatArray  # (6,)
    session_depth: float
    hour_of_day: float
    candidate_ids: list[str]
    candidate_signals: FloatArray  # (N, 6), raw units (watch time in seconds)
    keep: Mapping[str, int]  # stage → candidates it keeps
    session_signals: tuple[float, float, float] = RANK_SESSION_SIGNAL_DEFAULTS
    """Last pages' completion, skip rate, minutes in session (RankRequest.session_signals)."""


def _rank_stage_output(
    outputs: dict[str, FloatArray], stage_index: int, per_agent: bool
) -> tuple[FloatArray, FloatArray]:
    mean = outputs["action_mean"][0]
    log_std = outputs["action_log_std"][0]
    if not per_agent:
        if mean.shape[0] != RANK.action.flat_size:
            raise InferenceError(f"rank: action_mean has {mean.shape[0]} entries, expected {RANK.action.flat_size}")
        sl = slice(stage_index * N_SIGNALS, (stage_index + 1) * N_SIGNALS)
        mean, log_std = mean[sl], log_std[sl]
    if mean.shape[0] != N_SIGNALS or log_std.shape[0] != N_SIGNALS:
        raise InferenceError(f"rank: a stage needs {N_SIGNALS} weights, got mean {mean.shape} log_std {log_std.shape}")
    return mean, log_std


assert isinstance(RANK.action, BoxAction)
_RANK_LOW, _RANK_HIGH = RANK.action.low, RANK.action.high
_RANK_DEFAULT = np.asarray(RANK.default_action, dtype=np.float64).reshape(len(RANK_STAGES), N_SIGNALS)


async def decide_rank(
    x: RankInputs,
    scorer: Scorer | None,
    cfg: ExplorationConfig,
    rng: np.random.Generator,
    per_agent: bool = False,
) -> Decision:
    """Run pre-rank → rank → re-rank; each stage scores its own pool and keeps its top k.

    The logged observation is the three stage observations concatenated in
    stage order (3 × 24 entries): each stage's agent sees its own pool
    (MARDPG-style per-agent observations), and OPE needs all three.
    """
    low, high = _RANK_LOW, _RANK_HIGH
    default = _RANK_DEFAULT
    pool = np.arange(len(x.candidate_ids))
    observations: list[float] = []
    actions: list[float] = []
    log_density = 0.0
    stage_weights: dict[str, list[float]] = {}
    for i, stage in enumerate(RANK_STAGES):
        signals = x.candidate_signals if i == 0 else x.candidate_signals[pool]
        obs = rank_observation_one(
            x.user_activity_group, x.user_recent_rates, x.session_depth, x.hour_of_day, signals, x.session_signals
        )
        if scorer is None:
            weights = default[i]
        else:
            out = await scorer(stage if per_agent else None, obs[None, :])
            mean, log_std = _rank_stage_output(out, i, per_agent)
            sample = sample_box(mean, log_std, low, high, cfg, rng)
            weights = sample.action
            log_density += sample.log_density
        scores = fusion_scores(weights[None, :].astype(np.float32), signals[None, :, :])[0]
        keep = max(1, int(x.keep[stage]))
        pool = pool[top_k_one(scores, keep)]
        observations.extend(obs.tolist())
        stage_list = weights.tolist()
        actions.extend(stage_list)
        stage_weights[stage] = stage_list
    ordering = [x.candidate_ids[j] for j in pool]
    return Decision(
        action=actions,
        observation=observations,
        log_density=log_density,
        candidate_ids=ordering,
        details={"stage_weights": stage_weights, "ordering": ordering},
    )


# ---------------------------------------------------------------------------
# slot
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotInputs:
    user_activity_group: int
    user_recent_rates: FloatArray  # (6,)
    user_live_affinity: FloatArray  # (2,)
    session_depth: float
    hour_of_day: float
    page_video_watch_time: FloatArray  # (K,) seconds
    live_candidates: list[tuple[str, FloatArray]]  # id → (watch time s, quality, audience)
    user_live_sequence: FloatArray  # (10,) last 5 live exposures: (watch time s, seconds since) pairs


def best_live_candidate(cands: list[tuple[str, FloatArray]]) -> tuple[str, FloatArray]:
    """The live stream offered to the policy: the one with the highest predicted live watch time × quality."""
    return max(cands, key=lambda c: float(c[1][0]) * float(c[1][1]))


async def decide_slot(
    x: SlotInputs, scorer: Scorer | None, cfg: ExplorationConfig, rng: np.random.Generator
) -> Decision:
    live_id, live = best_live_candidate(x.live_candidates)
    obs = slot_observation_one(
        x.user_activity_group,
        x.user_recent_rates,
        x.session_depth,
        x.hour_of_day,
        x.user_live_affinity,
        x.page_video_watch_time,
        live,
        x.user_live_sequence,
    )[None, :]
    if scorer is None:
        action, propensity = int(SLOT.default_action[0]), 1.0
    else:
        logits = (await scorer(None, obs))["logits"][0]
        if logits.shape[0] != SLOT.action.n:  # type: ignore[union-attr]
            raise InferenceError(f"slot: logits have {logits.shape[0]} entries, expected {SLOT.action.n}")  # type: ignore[union-attr]
        action, propensity = sample_discrete(logits, cfg, rng)
    return Decision(
        action=[float(action)],
        observation=obs[0].tolist(),
        propensity=propensity,
        candidate_ids=[live_id] if action > 0 else [],
        details={"position": action if action > 0 else None, "live_id": live_id if action > 0 else None},
    )


# ---------------------------------------------------------------------------
# allocate
# ---------------------------------------------------------------------------
# Serving-side estimate of the compute units one allocation spends, used only
# for the response (the learned cost model lives with the policy). Calibrated
# so the default allocation costs 0.7 units, under the budget of 1.0.
CHANNEL_COST = 0.1
PRE_RANK_COST_PER_ITEM = 0.001
RANK_COST_PER_ITEM: dict[str, float] = {"small": 0.003, "medium": 0.006, "large": 0.012}


@dataclass(frozen=True)
class AllocateInputs:
    request_value: float
    system_load: float
    budget_utilisation: float
    hour_of_day: float
    user_activity_group: int
    user_history_length: float = ALLOCATE_DEFAULT_HISTORY_LENGTH
    entry_point: int = ALLOCATE_ENTRY_POINTS.index(ALLOCATE_DEFAULT_ENTRY_POINT)
    """Index into ALLOCATE_ENTRY_POINTS."""


def allocation_details(choice: list[int]) -> dict[str, object]:
    channels = [name for name, on in zip(ALLOCATE_CHANNELS, choice[:3], strict=True) if on]
    pre_rank = ALLOCATE_QUEUE_LENGTHS_PRE_RANK[choice[3]]
    rank = ALLOCATE_QUEUE_LENGTHS_RANK[choice[4]]
    tier = ALLOCATE_MODEL_TIERS[choice[5]]
    cost = CHANNEL_COST * len(channels) + PRE_RANK_COST_PER_ITEM * pre_rank + RANK_COST_PER_ITEM[tier] * rank
    return {
        "channels": channels,
        "pre_rank_queue": pre_rank,
        "rank_queue": rank,
        "rank_model_tier": tier,
        "estimated_cost": round(cost, 6),
    }


async def decide_allocate(
    x: AllocateInputs, scorer: Scorer | None, cfg: ExplorationConfig, rng: np.random.Generator
) -> Decision:
    assert isinstance(ALLOCATE.action, MultiDiscreteAction)
    obs = allocate_observation_one(
        x.request_value,
        x.system_load,
        x.budget_utilisation,
        x.hour_of_day,
        x.user_activity_group,
        x.user_history_length,
        x.entry_point,
    )[None, :]
    if scorer is None:
        choice, propensity = [int(a) for a in ALLOCATE.default_action], 1.0
    else:
        scores = (await scorer(None, obs))["action_scores"][0]
        choice, propensity = sample_multi_discrete(scores, ALLOCATE.action.nvec, cfg, rng)
    return Decision(
        action=[float(a) for a in choice],
        observation=obs[0].tolist(),
        propensity=propensity,
        details=allocation_details(choice),
    )
