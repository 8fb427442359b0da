"""A MaRCA version as an off-policy-evaluation policy: the server's decision rule, on logged observations.

`MarcaOnnxPolicy` reads the version's model.onnx (`action_scores`, per agent, cents) and cost_table.json
and gives, per logged row, the probability the server would have taken the logged allocation:
each agent samples from softmax((S_k − λ·C_k(bin(v))·contention(ℓ)) / τ) mixed with ε/A_k
(serving/allocate_marca.py + serving/exploration.py), the joint probability is the product over agents.

Ours (the paper evaluates online only):
* λ is fixed for the evaluation: the λ the server runs at varies with the balancer. The default is
  `calibrate_lambda` — the λ at which the candidate's greedy allocation spends the budget on the
  logged requests (mean estimated cost = the allocate spec's constraint threshold), i.e. the λ the
  balancer would settle at on this traffic. The evaluate step records it.
* `action_probabilities` returns each action *component*'s marginal (what evaluate's linear reward
  features need, exact for them); `joint_probability` returns the true probability of the logged joint
  action — the retrieval agent chooses its three channels jointly, so the product of component marginals
  would be wrong; pipelines/jobs/evaluate.py uses `joint_probability` when a policy has it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.problems import ALLOCATE, MultiDiscreteAction
from models.registry import MODEL_FILE, ModelRegistry
from serving.allocate_marca import AGENT_ACTIONS, AGENT_SIZES, COST_FILE, MarcaCostTable
from training.ope.errors import OPEInputError
from training.ope.policies import PRODUCTION, Exploration, OnnxPolicy, discrete_probabilities

FloatArray = npt.NDArray[np.float64]
_VALUE, _LOAD = 0, 1


class MarcaOnnxPolicy(OnnxPolicy):
    """OnnxPolicy with MaRCA's factorised rule a_k ~ S_k − λ·C_k (see the module docstring)."""

    def __init__(
        self,
        model_path: Path,
        cost_table: MarcaCostTable,
        lam: float | None = None,
        exploration: Exploration = Exploration(),
        name: str = "marca",
    ) -> None:
        super().__init__(ALLOCATE, model_path, None, exploration, name)
        self.cost_table = cost_table
        self.lam = float("nan") if lam is None else float(lam)

    @classmethod
    def from_files(
        cls, model_path: Path, cost_path: Path, lam: float | None = None, exploration: Exploration = Exploration()
    ) -> MarcaOnnxPolicy:
        return cls(Path(model_path), MarcaCostTable.load(Path(cost_path)), lam, exploration, name="marca-candidate")

    @classmethod
    def from_registry_version(
        cls, registry: ModelRegistry, version: str, lam: float | None = None, exploration: Exploration = Exploration()
    ) -> MarcaOnnxPolicy:
        loaded = registry.current("allocate") if version == PRODUCTION else registry.load("allocate", version)
        return cls(
            loaded.path / MODEL_FILE,
            MarcaCostTable.load(loaded.file(COST_FILE)),
            lam,
            exploration,
            name=f"allocate/{loaded.manifest.version}",
        )

    # -- the server's rule on a batch -------------------------------------------------------
    def adjusted_scores(self, observations: npt.ArrayLike, lam: float | None = None) -> FloatArray:
        """(N, Σ A_k): S_k(s, j) − λ·C_k(bin(v), j)·contention(ℓ), agents concatenated."""
        x = self._obs(observations)
        lam = self.lam if lam is None else lam
        if not np.isfinite(lam):
            raise OPEInputError("lambda", "set λ (or call calibrate_lambda) before evaluating a MaRCA policy")
        scores = self._run(x)["action_scores"]
        if scores.shape[1] != sum(AGENT_ACTIONS):
            raise OPEInputError("action_scores", f"expected {sum(AGENT_ACTIONS)} columns, got {scores.shape[1]}")
        value = np.expm1(x[:, _VALUE] * 5.0)
        costs = np.stack([np.asarray(self.cost_table.flat_costs(float(v))) for v in value])
        factor = np.maximum(0.0, 1.0 + self.cost_table.contention * (x[:, _LOAD] - 1.0))
        return scores - lam * costs * factor[:, None]

    def agent_probabilities(self, observations: npt.ArrayLike, lam: float | None = None) -> list[FloatArray]:
        """One (N, A_k) table per agent (retrieval 8, pre_rank 4, rank 12)."""
        adjusted = self.adjusted_scores(observations, lam)
        bounds = np.cumsum((0, *AGENT_ACTIONS))
        return [
            discrete_probabilities(adjusted[:, s:e], self.exploration)
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def joint_probability(self, observations: npt.ArrayLike, actions: npt.ArrayLike) -> FloatArray:
        """Probability of each logged joint action (N, 6) under the rule: the product over agents."""
        tables = self.agent_probabilities(observations)
        a = np.rint(np.asarray(actions, dtype=np.float64)).astype(np.int64)
        assert isinstance(ALLOCATE.action, MultiDiscreteAction)
        if a.shape != (tables[0].shape[0], len(ALLOCATE.action.nvec)):
            raise OPEInputError("action", f"expected shape ({tables[0].shape[0]}, 6), got {a.shape}")
        p, start = np.ones(a.shape[0]), 0
        for k, sizes in enumerate(AGENT_SIZES):
            cols = a[:, start : start + len(sizes)]
            index = np.ravel_multi_index(tuple(cols.T), sizes)
            p = p * tables[k][np.arange(a.shape[0]), index]
            start += len(sizes)
        return p

    def action_probabilities(self, observations: npt.ArrayLike) -> list[FloatArray]:
        """Per action component (six) the marginal of the agents' joint choice."""
        out: list[FloatArray] = []
        for table, sizes in zip(self.agent_probabilities(observations), AGENT_SIZES, strict=True):
            grid = table.reshape(table.shape[0], *sizes)
            for axis in range(len(sizes)):
                others = tuple(i + 1 for i in range(len(sizes)) if i != axis)
                out.append(grid.sum(axis=others) if others else grid)
        return out

    def probability(self, observations: npt.ArrayLike, actions: npt.ArrayLike) -> FloatArray:
        return self.joint_probability(observations, actions)

    def calibrate_lambda(self, observations: npt.ArrayLike, budget: float, iterations: int = 40) -> float:
        """λ ≥ 0 at which the greedy rule's mean estimated cost on `observations` meets `budget` (bisection on
        log λ in [1e-4, 1e3]); sets and returns it. 0 when even λ = 0 stays within budget."""
        x = self._obs(observations)
        value = np.expm1(x[:, _VALUE] * 5.0)
        costs = np.stack([np.asarray(self.cost_table.flat_costs(float(v))) for v in value])
        factor = np.maximum(0.0, 1.0 + self.cost_table.contention * (x[:, _LOAD] - 1.0))
        bounds = np.cumsum((0, *AGENT_ACTIONS))

        def spend(lam: float) -> float:
            adjusted = self.adjusted_scores(x, lam)
            total = np.full(x.shape[0], self.cost_table.base_cost)
            for s, e in zip(bounds[:-1], bounds[1:], strict=True):
                pick = np.argmax(adjusted[:, s:e], axis=1)
                total += costs[np.arange(x.shape[0]), s + pick]
            return float((total * factor).mean())

        if spend(0.0) <= budget:
            self.lam = 0.0
            return 0.0
        lo, hi = np.log(1e-4), np.log(1e3)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if spend(float(np.exp(mid))) <= budget else (mid, hi)
        self.lam = float(np.exp(hi))
        return self.lam
