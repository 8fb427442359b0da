"""MaRCA in the retrain loop: offline training from logged rows, the OPE view of the server's rule
(pipelines/jobs/marca_ope.py), the λ calibration, and the train config's errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.jobs.marca_ope import MarcaOnnxPolicy
from pipelines.jobs.marca_retrain import marca_settings
from serving.allocate_marca import MarcaCostTable, decide_allocate_marca
from serving.exploration import ExplorationConfig
from serving.policies import AllocateInputs
from training.algorithms import marca as M
from training.algorithms import marca_export as X
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim
from training.ope.policies import Exploration

SMALL = M.MarcaConfig(num_heads=2, hidden_size=8, encoder_size=16, mixer_embed_size=8, batch_size=128)


def _logged_rows(n: int = 256, intervals: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = BatchedAllocateSim(n, AllocateConfig(), 3, autoreset=True)
    obs = sim.reset(3)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(intervals):
        actions = O.ALL_ACTIONS[rng.integers(0, len(O.ALL_ACTIONS), n)]
        nxt, rewards, _, _ = sim.step(actions)
        rows.append((obs, actions, rewards["revenue"]))
        obs = nxt
    return tuple(np.concatenate(c) for c in zip(*rows, strict=True))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[M.MarcaLearner, dict[str, Path], np.ndarray]:
    torch.set_num_threads(1)
    obs, actions, revenue = _logged_rows()
    result = M.train_offline(SMALL, obs, actions, revenue, steps=40)
    assert np.isfinite([h["td_loss"] for h in result.history]).all()
    assert result.history[-1]["td_loss"] < result.history[0]["td_loss"]
    learner = result.learner
    files = X.export_policy(learner, X.simulator_cost_model(AllocateConfig(), learner), tmp_path_factory.mktemp("m"))
    return learner, files, obs


def test_ope_view_is_a_distribution_whose_marginals_match_and_whose_greedy_choice_is_the_servers(
    exported: tuple[M.MarcaLearner, dict[str, Path], np.ndarray],
) -> None:
    _, files, obs = exported
    rows = obs[:5]
    policy = MarcaOnnxPolicy.from_files(files["model.onnx"], files["cost_table.json"], 0.5, Exploration(1.0, 0.1))
    joint = np.stack([policy.joint_probability(np.repeat(r[None], 384, 0), O.ALL_ACTIONS) for r in rows])
    np.testing.assert_allclose(joint.sum(axis=1), 1.0, atol=1e-9)
    for k, marginal in enumerate(policy.action_probabilities(rows)):
        for j in range(marginal.shape[1]):
            np.testing.assert_allclose(marginal[:, j], joint[:, O.ALL_ACTIONS[:, k] == j].sum(axis=1), atol=1e-9)
    greedy = MarcaOnnxPolicy.from_files(files["model.onnx"], files["cost_table.json"], 0.5, Exploration(0.0, 0.0))
    import onnxruntime as ort

    session = ort.InferenceSession(str(files["model.onnx"]), providers=["CPUExecutionProvider"])

    async def scorer(agent: str | None, o: np.ndarray) -> dict[str, np.ndarray]:
        return {"action_scores": session.run(["action_scores"], {"observation": o})[0]}

    table = MarcaCostTable.load(files["cost_table.json"])
    x = AllocateInputs(120.0, 1.1, 0.9, 20.0, 2, 300.0, 1)
    d = asyncio.run(
        decide_allocate_marca(x, scorer, table, 0.5, ExplorationConfig(temperature=0.0), np.random.default_rng())
    )
    assert greedy.joint_probability(np.asarray([d.observation]), np.asarray([d.action]))[0] == pytest.approx(1.0)


def test_calibrated_lambda_spends_the_budget(exported: tuple[M.MarcaLearner, dict[str, Path], np.ndarray]) -> None:
    _, files, obs = exported
    policy = MarcaOnnxPolicy.from_files(files["model.onnx"], files["cost_table.json"])
    with pytest.raises(Exception, match="lambda"):
        policy.joint_probability(obs[:2], O.ALL_ACTIONS[:2])
    config = AllocateConfig()
    for budget in (0.6, 0.9):
        lam = policy.calibrate_lambda(obs, budget)
        assert lam > 0
        adjusted = policy.adjusted_scores(obs, lam)
        bounds = np.cumsum((0, 8, 4, 12))
        picks = [np.argmax(adjusted[:, s:e], axis=1) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
        joint = M.STAGE_SPLIT.to_joint(np.stack(picks, axis=1))
        spend = (config.expected_cost(joint) * np.maximum(0.0, 1 + config.contention * (obs[:, 1] - 1))).mean()
        assert spend <= budget + 1e-6 and spend > budget - 0.1


def test_train_config_errors_name_the_key() -> None:
    cfg, extras = marca_settings({"run": {"iterations": 7}, "algo": {"num_heads": 2}}, seed=3)
    assert cfg.num_heads == 2 and cfg.seed == 3 and extras["offline_steps"] == 7
    with pytest.raises(ValueError, match="warm_start_steps"):
        marca_settings({"warm_start_steps": 3}, seed=0)
    with pytest.raises(ValueError, match="action"):
        M.train_offline(SMALL, np.zeros((4, 12)), np.full((4, 6), 9), np.zeros(4), steps=1)
