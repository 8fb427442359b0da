"""MaRCA's serving artifact: one ONNX graph of slope-weighted agent Q-values, plus the cost table and load model.

The server (serving/allocate_marca.py, numpy + onnxruntime, no torch) decides
each agent k by a_k = argmax_j S_k(s, j) − λ·C_k(v, j)·(1 + κ(ℓ − 1)), where
S_k(s, j) = w_k(s)·q_k(s, j)·unit(s) is what this graph outputs as
`action_scores` (B, Σ_k A_k) — agents concatenated in cascade order, in cents.
λ is applied from the cost table (`cost_table.json`, the AutoBucket JSON of
marca_cost.py) by the server, so λ changes every interval without a new graph.

Inside the graph (ours; the paper does not say how its factorised rule is
served):
* the three agents' GRU steps chained along the cascade (retrieval → pre-rank →
  rank), each the plain mean of its K heads (MaRCA's serving rule);
* the mixer's slope w_k(s) = ∂Q_tot/∂q_k taken analytically (QMIX mixer:
  Q_tot = w₂·elu(q W₁ + b₁) + V, so ∂Q_tot/∂q_k = Σ_e W₁[k,e]·w₂[e]·elu'(h_e);
  VDN: 1), at the agents' λ = 0 choice (each agent's argmax of its own Q);
* unit(s) = request value × reward_scale (marca.MarcaLearner.reward_unit).
Deviation from `MarcaPolicy` in training: the slope is read once, at the λ = 0
choice (`MarcaPolicy(slope_iterations=1)`), not re-read at the λ-adjusted choice
— the graph cannot see λ. `tests/unit/test_marca_export.py` checks that the
server's rule equals `MarcaPolicy(slope_iterations=1)` action for action.

The version's files: model.onnx (this graph), cost_table.json, and, when the
balancer's load model was refitted, load_model.json (serving/balancer.py's
`LoadModel.to_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.algorithms.marca import _VALUE, OBS_SIZE, MarcaLearner
from training.algorithms.marca_cost import AutoBucketCostModel
from training.rl.mixers import MonotoneMixer, SumMixer

MODEL_FILE = "model.onnx"
COST_FILE = "cost_table.json"
LOAD_MODEL_FILE = "load_model.json"
OUTPUT = "action_scores"


class ServingScores(nn.Module):
    """observation (B, 12) → action_scores (B, Σ A_k): w_k(s)·q_k(s, j) in cents, agents concatenated."""

    def __init__(self, learner: MarcaLearner) -> None:
        super().__init__()
        if not isinstance(learner.mixer, MonotoneMixer | SumMixer):
            raise ValueError(f"ServingScores: no analytic slope for mixer {type(learner.mixer).__name__}")
        self.learner = learner

    def slopes(self, chosen: Tensor, obs: Tensor) -> Tensor:
        mixer = self.learner.mixer
        if isinstance(mixer, SumMixer):
            return torch.ones_like(chosen)
        w1, w2 = mixer.mixing_weights(obs)  # (B, N, E), (B, E)
        hidden = torch.bmm(chosen.unsqueeze(1), w1).squeeze(1) + mixer.hyper_b1(obs)  # (B, E)
        # elu'(h) = 1 for h > 0, exp(h) otherwise (α = 1); exp(min(h, 0)) equals both.
        d_elu = torch.exp(torch.clamp(hidden, max=0.0))
        return torch.bmm(w1, (w2 * d_elu).unsqueeze(2)).squeeze(2)  # (B, N)

    def forward(self, observation: Tensor) -> Tensor:
        learner = self.learner
        qs = [q.mean(dim=1) for q in learner.agent_q(observation)]  # heads' mean: the serving rule
        chosen = torch.stack([q.max(dim=1).values for q in qs], dim=1)  # the λ = 0 choice's Q
        slopes = self.slopes(chosen, observation)
        # exp(x) − 1 (ONNX has no expm1; the values here are cents, far from the rounding of small x)
        value = (torch.exp(observation[:, _VALUE] * 5.0) - 1.0).clamp_min(1e-6)
        unit = (value * learner.reward_scale)[:, None]
        return torch.cat([q * (slopes[:, i : i + 1] * unit) for i, q in enumerate(qs)], dim=1)


def export_serving_graph(
    learner: MarcaLearner, path: Path, parity_samples: int = 256, tolerance: float = 1e-3
) -> float:
    """Write the graph to `path`; returns max |torch − onnxruntime| (relative to the score scale), raises above
    `tolerance`. Parity rows are realistic observations (value bins spread over 0 … 1000 cents)."""
    import onnxruntime as ort

    module = ServingScores(learner.cpu().eval()).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (torch.zeros(2, OBS_SIZE),),
        str(path),
        input_names=["observation"],
        output_names=[OUTPUT],
        dynamic_axes={"observation": {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(parity_samples, OBS_SIZE, generator=gen)
    obs[:, _VALUE] = torch.log1p(torch.rand(parity_samples, generator=gen) * 1000.0) / 5.0
    with torch.no_grad():
        expected = module(obs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {"observation": obs.numpy()})[0]
    err = float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))
    if not err <= tolerance:
        raise ValueError(f"export_serving_graph: onnxruntime differs from torch by {err:.2e} (> {tolerance})")
    return err


def export_policy(
    learner: MarcaLearner,
    cost: AutoBucketCostModel,
    directory: Path,
    load_model: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the version's files into `directory`; returns file name → path (what the registry copies in)."""
    if tuple(cost.agents) != tuple(learner.split.names):
        raise ValueError(
            f"export_policy: cost table is for agents {cost.agents}, the learner has {learner.split.names}"
        )
    for name, size in zip(learner.split.names, learner.split.num_actions, strict=True):
        widths = {len(row) for row in cost.stage_costs[name]}
        if widths != {size}:
            raise ValueError(f"export_policy: cost_table.stage_costs[{name!r}] rows have {widths} actions, need {size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {MODEL_FILE: directory / MODEL_FILE, COST_FILE: cost.save(directory / COST_FILE)}
    export_serving_graph(learner, files[MODEL_FILE])
    if load_model is not None:
        files[LOAD_MODEL_FILE] = directory / LOAD_MODEL_FILE
        files[LOAD_MODEL_FILE].write_text(json.dumps(load_model))
    return files


def simulator_cost_model(config: Any, learner: MarcaLearner) -> AutoBucketCostModel:
    """The simulator's own per-stage cost as a one-bin AutoBucket table (exact; for tests and quick runs —
    the retrain pipeline ships `marca_cost.fit_autobucket`'s load-tested table)."""
    from training.algorithms.marca import CostTable

    table = CostTable.from_simulator(config, learner.split)
    return AutoBucketCostModel(
        agents=tuple(learner.split.names),
        value_bin_edges=(),
        bucket_weights=(1.0,),
        stage_costs={n: [t.tolist()] for n, t in zip(learner.split.names, table.per_agent, strict=True)},
        base_cost=0.0,
        contention=float(table.contention),
        measured_at_traffic=(1.0, 1.0),
    )
