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
from torch.nn import functional as F

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


def _linear(weight: Tensor, bias: Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class FoldedServingScores(nn.Module):
    """`ServingScores` with exact algebraic folds done once at export (ours; the outputs equal `ServingScores`'
    up to float rounding — `tests/unit/test_marca_export.py` and benchmarks/allocate_graph.py check it):

    * the K heads' plain mean: mean_k (W_k h + b_k) = (mean_k W_k) h + mean_k b_k — one (A, H) layer per agent
      instead of a (K·A, H) layer, a reshape and a ReduceMean;
    * each GRU's gate layers split per gate (r, z, n) at export, so the graph has no chunking Slices, and the
      hidden-side biases of r and z added into the input-side ones (σ(W x + b_i + U h + b_h));
    * the first agent's GRU starts from the zero state: U·0 = 0 and z ⊙ 0 = 0, so its hidden-to-gates MatMuls
      and the update's state term leave the graph (only b_hn stays, inside the candidate);
    * the mixer's hypernetwork W₁ split per agent, so the analytic slope w_k = Σ_e W₁[k,e]·w₂[e]·elu'(h_e) is
      computed without batched matmuls and reshapes.
    The mixer's slope itself stays: it depends on the state (the hypernetwork reads s), so folding it into
    the agents' weights would change the decisions at λ > 0.
    """

    def __init__(self, learner: MarcaLearner) -> None:
        super().__init__()
        from training.rl.recurrent import GRUCell

        self.reward_scale = float(learner.reward_scale)
        self.encoders, self.heads = nn.ModuleList(), nn.ModuleList()
        self.x_gates, self.h_gates = nn.ModuleList(), nn.ModuleList()  # per agent: ModuleList of 3 (r, z, n)
        self.hidden_n_bias = nn.ParameterList()
        for k, net in enumerate(learner.agents):
            if not isinstance(net.cell, GRUCell):
                raise ValueError(f"FoldedServingScores: agent {k} has a {type(net.cell).__name__}, GRU expected")
            heads, a = net.num_heads, net.num_actions
            w = net.heads.weight.detach()
            self.heads.append(
                _linear(w.reshape(heads, a, -1).mean(dim=0), net.heads.bias.detach().reshape(heads, a).mean(dim=0))
            )
            self.encoders.append(net.encoder)
            wi, bi = net.cell.input_to_gates.weight.detach().chunk(3), net.cell.input_to_gates.bias.detach().chunk(3)
            wh, bh = net.cell.hidden_to_gates.weight.detach().chunk(3), net.cell.hidden_to_gates.bias.detach().chunk(3)
            self.x_gates.append(
                nn.ModuleList([_linear(wi[0], bi[0] + bh[0]), _linear(wi[1], bi[1] + bh[1]), _linear(wi[2], bi[2])])
            )
            zero = torch.zeros_like(bh[0])
            self.h_gates.append(nn.ModuleList([_linear(wh[0], zero), _linear(wh[1], zero), _linear(wh[2], bh[2])]))
            self.hidden_n_bias.append(nn.Parameter(bh[2].clone(), requires_grad=False))
        mixer = learner.mixer
        self.monotone = isinstance(mixer, MonotoneMixer)
        if self.monotone:
            n, e = mixer.num_agents, mixer.embed_size
            w1 = mixer.hyper_w1.weight.detach().reshape(n, e, -1)
            b1 = mixer.hyper_w1.bias.detach().reshape(n, e)
            self.hyper_w1 = nn.ModuleList([_linear(w1[k], b1[k]) for k in range(n)])
            self.hyper_b1, self.hyper_w2 = mixer.hyper_b1, mixer.hyper_w2
        elif not isinstance(mixer, SumMixer):
            raise ValueError(f"FoldedServingScores: no analytic slope for mixer {type(mixer).__name__}")

    def forward(self, observation: Tensor) -> Tensor:
        state: Tensor | None = None
        qs = []
        for k, head in enumerate(self.heads):
            x = self.encoders[k](observation)
            xg, hg = self.x_gates[k], self.h_gates[k]
            if state is None:  # zero state: U·0 = 0
                reset = torch.sigmoid(xg[0](x))
                update = torch.sigmoid(xg[1](x))
                state = (1.0 - update) * torch.tanh(xg[2](x) + reset * self.hidden_n_bias[k])
            else:
                reset = torch.sigmoid(xg[0](x) + hg[0](state))
                update = torch.sigmoid(xg[1](x) + hg[1](state))
                candidate = torch.tanh(xg[2](x) + reset * hg[2](state))
                state = (1.0 - update) * candidate + update * state
            qs.append(head(state))
        value = (torch.exp(observation[:, _VALUE : _VALUE + 1] * 5.0) - 1.0).clamp_min(1e-6)
        unit = value * self.reward_scale  # (B, 1) cents per Q unit
        if not self.monotone:  # VDN: every slope is 1
            return torch.cat(qs, dim=1) * unit
        chosen = [q.max(dim=1, keepdim=True).values for q in qs]  # the λ = 0 choice's Q, (B, 1) each
        w1 = [F.softplus(layer(observation)) for layer in self.hyper_w1]  # (B, E) per agent
        hidden = self.hyper_b1(observation)
        for c, w in zip(chosen, w1, strict=True):
            hidden = hidden + c * w
        # elu'(h) = 1 for h > 0, exp(h) otherwise (α = 1); exp(min(h, 0)) equals both.
        d = F.softplus(self.hyper_w2(observation)) * torch.exp(torch.clamp(hidden, max=0.0)) * unit
        return torch.cat([q * (w * d).sum(dim=1, keepdim=True) for q, w in zip(qs, w1, strict=True)], dim=1)


def export_serving_graph(
    learner: MarcaLearner, path: Path, parity_samples: int = 256, tolerance: float = 1e-3, folded: bool = True
) -> float:
    """Write the graph to `path`; returns max |torch − onnxruntime| (relative to the score scale), raises above
    `tolerance`. Parity rows are realistic observations (value bins spread over 0 … 1000 cents); the reference is
    the un-folded `ServingScores` either way. `folded=False` writes the un-folded graph (benchmarks/allocate_graph's
    baseline)."""
    import onnxruntime as ort

    learner = learner.cpu().eval()
    reference = ServingScores(learner).eval()
    module = FoldedServingScores(learner).eval() if folded else reference
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
        expected = reference(obs).numpy()
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
