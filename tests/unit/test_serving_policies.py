"""Policy runners: the rank cascade, slot and allocate decisions, and the default policies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.observations import SIGNAL_SCALE
from models.problems import ALLOCATE, RANK, SLOT, SLOT_LIVE_SEQUENCE_LENGTH
from serving.errors import InferenceError
from serving.exploration import ExplorationConfig
from serving.policies import (
    AllocateInputs,
    RankInputs,
    SlotInputs,
    allocation_details,
    decide_allocate,
    decide_rank,
    decide_slot,
)

GREEDY = ExplorationConfig(temperature=0.0, epsilon=0.0, std_scale=0.0)


def _rank_inputs(n: int = 30) -> RankInputs:
    rng = np.random.default_rng(0)
    sig = rng.uniform(0, 1, (n, 6)).astype(np.float32)
    sig[:, 0] *= 60
    return RankInputs(
        2,
        np.zeros(6, np.float32),
        1.0,
        8.0,
        [f"c{i}" for i in range(n)],
        sig,
        {"pre_rank": 10, "rank": 5, "re_rank": 3},
    )


def test_rank_cascade_keeps_each_stage_top_k_by_its_weights() -> None:
    x = _rank_inputs()
    stage_w = {0: [1, 0, 0, 0, 0, 0], 1: [0, 1, 0, 0, 0, 0], 2: [0, 0, 1, 0, 0, 0]}
    calls: list[int] = []

    async def scorer(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        assert agent is None and obs.shape == (1, RANK.observation_size)
        calls.append(1)
        mean = np.concatenate([np.array(stage_w[i], np.float32) for i in range(3)])[None, :]
        return {"action_mean": mean, "action_log_std": np.zeros_like(mean)}

    d = asyncio.run(decide_rank(x, scorer, GREEDY, np.random.default_rng(0)))
    scaled = x.candidate_signals * SIGNAL_SCALE
    pool = np.argsort(-scaled[:, 0], kind="stable")[:10]
    pool = pool[np.argsort(-scaled[pool, 1], kind="stable")[:5]]
    pool = pool[np.argsort(-scaled[pool, 2], kind="stable")[:3]]
    assert d.candidate_ids == [f"c{i}" for i in pool]
    assert len(calls) == 3 and len(d.observation) == 3 * RANK.observation_size
    assert d.action == [float(w) for i in range(3) for w in stage_w[i]] and d.log_density == 0.0


def test_rank_per_agent_outputs_and_bad_shapes() -> None:
    x = _rank_inputs()

    async def per_agent(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        assert agent in ("pre_rank", "rank", "re_rank")
        return {"action_mean": np.full((1, 6), 0.5, np.float32), "action_log_std": np.full((1, 6), -2.0, np.float32)}

    d = asyncio.run(decide_rank(x, per_agent, ExplorationConfig(), np.random.default_rng(0), per_agent=True))
    assert len(d.action) == 18 and d.log_density is not None and d.log_density != 0.0

    async def wrong(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"action_mean": np.zeros((1, 5), np.float32), "action_log_std": np.zeros((1, 5), np.float32)}

    with pytest.raises(InferenceError, match="expected 18"):
        asyncio.run(decide_rank(x, wrong, GREEDY, np.random.default_rng(0)))


def test_rank_default_policy_uses_spec_weights() -> None:
    d = asyncio.run(decide_rank(_rank_inputs(), None, ExplorationConfig(), np.random.default_rng(0)))
    assert d.action == [float(v) for v in RANK.default_action] and d.log_density == 0.0


def test_slot_picks_position_from_logits_and_offers_best_live() -> None:
    x = SlotInputs(
        1,
        np.zeros(6, np.float32),
        np.zeros(2, np.float32),
        0.0,
        12.0,
        np.full(6, 30.0, np.float32),
        [("weak", np.array([10.0, 0.1, 5.0], np.float32)), ("strong", np.array([200.0, 0.9, 50.0], np.float32))],
        # One exposure an hour ago with 90 s watched, then padding.
        np.array([90.0, 3600.0] + [0.0, np.inf] * (SLOT_LIVE_SEQUENCE_LENGTH - 1), np.float32),
    )
    slices = SLOT.observation_slices()

    async def scorer(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        assert obs[0, slices["live_candidate"].start] == pytest.approx(200.0 / 60.0)  # the strong live candidate
        sequence = obs[0, slices["user_live_sequence"]]
        assert sequence[:2] == pytest.approx([1.5, 1.0 - np.log1p(1.0) / np.log1p(168.0)])
        assert not sequence[2:].any()
        return {"logits": np.array([[0, 0, 0, 5, 0, 0, 0]], np.float32)}

    d = asyncio.run(decide_slot(x, scorer, GREEDY, np.random.default_rng(0)))
    assert d.action == [3.0] and d.propensity == 1.0 and d.details == {"position": 3, "live_id": "strong"}
    fb = asyncio.run(decide_slot(x, None, GREEDY, np.random.default_rng(0)))
    assert fb.action == [0.0] and fb.propensity == 1.0 and fb.details["position"] is None


def test_allocate_decodes_components_and_default_cost_is_under_budget() -> None:
    async def scorer(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        s = np.zeros(17, np.float32)
        for i in (1, 2, 5, 9, 12, 16):  # the argmax of each component slice
            s[i] = 5
        return {"action_scores": s[None, :]}

    d = asyncio.run(decide_allocate(AllocateInputs(50, 0.5, 0.2, 10, 1), scorer, GREEDY, np.random.default_rng(0)))
    assert d.action == [1.0, 0.0, 1.0, 3.0, 2.0, 2.0]
    assert d.details["channels"] == ["channel_collaborative", "channel_trending"]
    assert (d.details["pre_rank_queue"], d.details["rank_queue"], d.details["rank_model_tier"]) == (800, 100, "large")
    default = allocation_details([int(a) for a in ALLOCATE.default_action])
    assert default["estimated_cost"] == pytest.approx(0.7)
    assert ALLOCATE.constraints[0].satisfied(float(default["estimated_cost"]))  # type: ignore[arg-type]


def test_serving_imports_neither_training_nor_torch() -> None:
    code = "import sys, serving.app, serving.triton_repository; bad=[m for m in sys.modules if m.split('.')[0] in ('torch','training')]; print(bad)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"


def test_request_signal_fields_are_the_spec_signals() -> None:
    """The request documents exactly the six predicted signals (service.py reads them by name, in spec order)."""
    from models.problems import PREDICTED_SIGNALS
    from serving.schemas import PredictedSignals

    assert tuple(PredictedSignals.__annotations__) == PREDICTED_SIGNALS
