"""MaRCA's serving artifact (training/algorithms/marca_export.py) against the server's rule (serving/allocate_marca.py):
the analytic mixer slope, the ONNX graph, the shipped cost table, and the factorised decision action for action."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import RegistryError
from models.observations import allocate_observation_one
from serving.allocate_marca import MarcaCostTable, decide_allocate_marca, to_joint
from serving.exploration import ExplorationConfig
from serving.policies import AllocateInputs
from training.algorithms import marca as M
from training.algorithms import marca_export as X
from training.envs.allocate import AllocateConfig

SMALL = M.MarcaConfig(num_heads=2, hidden_size=8, encoder_size=16, mixer_embed_size=8)


def _learner(variant: str = "marca", seed: int = 4) -> M.MarcaLearner:
    torch.manual_seed(seed)
    learner = M.VARIANTS[variant](SMALL)
    learner.reward_scale.fill_(0.05)
    return learner.eval()


def test_analytic_slope_equals_autograd() -> None:
    learner = _learner()
    obs = torch.rand(64, M.OBS_SIZE)
    chosen = torch.randn(64, 3)
    analytic = X.ServingScores(learner).slopes(chosen, obs)
    assert torch.allclose(analytic, learner.mixer_slopes(chosen, obs), atol=1e-5)
    assert (analytic >= 0).all()


@pytest.mark.parametrize("variant", ["marca", "qmix", "vdn"])
def test_folded_graph_equals_the_unfolded_scores_and_marca_policy_actions(variant: str) -> None:
    """The export's folds (head mean into one layer, per-gate GRU layers, the zero first state, per-agent
    hypernetwork rows) are algebra, not approximations: scores within 1e-5 and the same λ-adjusted choice."""
    learner = _learner(variant)
    gen = torch.Generator().manual_seed(3)
    obs = torch.rand(1000, M.OBS_SIZE, generator=gen)
    obs[:, M._VALUE] = torch.log1p(torch.rand(1000, generator=gen) * 1000.0) / 5.0
    with torch.no_grad():
        folded = X.FoldedServingScores(learner)(obs)
        plain = X.ServingScores(learner)(obs)
    scale = float(plain.abs().max())
    assert float((folded - plain).abs().max()) <= 1e-5 * max(1.0, scale)
    cost = M.CostTable.from_simulator(AllocateConfig(), learner.split)
    costs = torch.as_tensor(np.concatenate(cost.at_load(float(obs[0, M._LOAD]))), dtype=folded.dtype)
    for lam in (0.0, 0.7, 5.0):
        policy = M.MarcaPolicy(learner, cost, lambda o, lam=lam: lam, slope_iterations=1)
        want = policy.agent_actions(obs.numpy())
        parts = torch.split(folded - lam * costs[None, :], list(learner.split.num_actions), dim=1)
        got = torch.stack([p.argmax(dim=1) for p in parts], dim=1).numpy()
        assert (got == want).all(), lam


def test_folded_export_has_fewer_nodes(tmp_path: Path) -> None:
    import onnx

    learner = _learner()
    X.export_serving_graph(learner, tmp_path / "folded.onnx")
    X.export_serving_graph(learner, tmp_path / "plain.onnx", folded=False)
    nodes = [len(onnx.load(str(tmp_path / f)).graph.node) for f in ("folded.onnx", "plain.onnx")]
    assert nodes[0] < 0.6 * nodes[1], nodes


def _requests(n: int, seed: int = 0) -> list[AllocateInputs]:
    rng = np.random.default_rng(seed)
    return [
        AllocateInputs(
            float(rng.uniform(0, 300)),
            float(rng.uniform(0.3, 1.5)),
            float(rng.uniform(0, 1.2)),
            float(rng.uniform(0, 24)),
            int(rng.integers(0, 3)),
            float(rng.uniform(0, 500)),
            int(rng.integers(0, 3)),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("variant", ["marca", "vdn"])
def test_server_rule_on_the_onnx_graph_is_marca_policy_with_one_slope_pass(variant: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    learner = _learner(variant)
    config = AllocateConfig()
    files = X.export_policy(learner, X.simulator_cost_model(config, learner), tmp_path)
    assert set(files) == {"model.onnx", "cost_table.json"}
    session = ort.InferenceSession(str(files["model.onnx"]), providers=["CPUExecutionProvider"])

    async def scorer(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"action_scores": session.run(["action_scores"], {"observation": obs})[0]}

    table = MarcaCostTable.load(files["cost_table.json"])
    greedy = ExplorationConfig(temperature=0.0)
    cost = M.CostTable.from_simulator(config, learner.split)
    for lam in (0.0, 0.7, 5.0):
        policy = M.MarcaPolicy(learner, cost, lambda o, lam=lam: lam, slope_iterations=1)
        for x in _requests(40, seed=int(lam * 10)):
            got = asyncio.run(decide_allocate_marca(x, scorer, table, lam, greedy, np.random.default_rng(0)))
            obs = allocate_observation_one(
                x.request_value, x.system_load, x.budget_utilisation, x.hour_of_day,
                x.user_activity_group, x.user_history_length, x.entry_point,
            )[None, :]  # fmt: skip
            want = policy(obs)[0]
            assert got.action == [float(a) for a in want], (lam, x)
            assert got.propensity == 1.0 and got.details["lambda"] == lam
            expected_cost = float(config.expected_cost(want[None, :])[0]) * config.contention_factor(x.system_load)
            assert got.details["estimated_cost"] == pytest.approx(expected_cost, rel=1e-4)


def test_exploration_logs_the_product_of_the_agents_propensities(tmp_path: Path) -> None:
    learner = _learner()
    files = X.export_policy(learner, X.simulator_cost_model(AllocateConfig(), learner), tmp_path)
    import onnxruntime as ort

    session = ort.InferenceSession(str(files["model.onnx"]), providers=["CPUExecutionProvider"])

    async def scorer(agent: str | None, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"action_scores": session.run(["action_scores"], {"observation": obs})[0]}

    table = MarcaCostTable.load(files["cost_table.json"])
    cfg = ExplorationConfig(temperature=1.0, epsilon=0.2)
    x = _requests(1)[0]
    d = asyncio.run(decide_allocate_marca(x, scorer, table, 1.0, cfg, np.random.default_rng(1)))
    obs = np.asarray([d.observation], np.float32)
    scores = session.run(["action_scores"], {"observation": obs})[0][0].astype(np.float64)
    costs = np.concatenate([np.asarray(c) for c in table.costs(x.request_value, x.system_load)])
    flat = scores - 1.0 * costs
    agent_actions = [int(np.ravel_multi_index(tuple(int(a) for a in d.action[:3]), (2, 2, 2))),
                     int(d.action[3]), int(d.action[4]) * 3 + int(d.action[5])]  # fmt: skip
    assert to_joint(agent_actions) == [int(a) for a in d.action]
    want, start = 1.0, 0
    for n, a in zip((8, 4, 12), agent_actions, strict=True):
        z = flat[start : start + n]
        p = np.exp(z - z.max())
        p = 0.8 * p / p.sum() + 0.2 / n
        want *= p[a]
        start += n
    assert d.propensity == pytest.approx(want, rel=1e-9)


def test_cost_table_errors_name_the_field(tmp_path: Path) -> None:
    learner = _learner()
    path = X.simulator_cost_model(AllocateConfig(), learner).save(tmp_path / "cost_table.json")
    good = json.loads(path.read_text())
    for field, change in [
        ("kind", {"kind": "other"}),
        ("agents", {"agents": ["retrieval", "rank"]}),
        ("stage_costs.rank", {"stage_costs": {**good["stage_costs"], "rank": [[0.1] * 5]}}),
        ("value_bin_edges", {"value_bin_edges": [3.0, 1.0]}),
    ]:
        with pytest.raises(RegistryError, match=field.replace(".", r"\.")):
            MarcaCostTable.from_json({**good, **change})
    with pytest.raises(ValueError, match="stage_costs"):
        bad = X.simulator_cost_model(AllocateConfig(), learner)
        bad.stage_costs["pre_rank"] = [[0.0, 1.0]]
        X.export_policy(learner, bad, tmp_path / "bad")
