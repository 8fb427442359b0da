"""Registered ONNX policies as evaluation policies: action probabilities and densities for logged rows.

An exported policy has one input, ``observation`` [batch, obs_size], and the
outputs its problem spec names (models/problems.py):

* ``slot`` — ``logits`` [batch, n] → p = (1 − ε)·softmax(logits / τ) + ε / n;
* ``allocate`` — ``action_scores`` [batch, Σ nvec] → the same rule per component,
  components independent, so p(a) = Π_k p_k(a_k);
* ``rank`` — ``action_mean`` and ``action_log_std`` [batch, 18] → a Gaussian with
  σ = std_scale·exp(log_std) per entry, clipped to the action box.

The probability rules are the ones serving uses to sample and log
(serving/exploration.py), re-implemented here batched because `training`
must not import `serving`; tests/unit/test_ope_policies.py checks the two
agree. The defaults (τ = 1, ε = 0, std_scale = 1) evaluate the policy as
exported; pass the arm's exploration settings to evaluate it as deployed.

`rank` observations come in two widths: 24 (one observation per request, the
simulator's single view) or 72 (serving logs the three stage observations
side by side); with 72 each stage's weights come from the model run on that
stage's own observation. A multi-agent rank export (manifest.agents) runs
each stage's agent on its stage observation.

Shapes: N rows, D observation size, A action size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from models.errors import RegistryError
from models.problems import RANK_STAGES, BoxAction, DiscreteAction, MultiDiscreteAction, ProblemSpec, get_problem
from models.registry import MODEL_FILE, LoadedVersion, ModelRegistry
from training.ope.errors import OPEInputError
from training.ope.weights import softmax

FloatArray = npt.NDArray[np.float64]
PRODUCTION = "production"
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True)
class Exploration:
    """How the evaluated policy turns outputs into actions (mirrors serving's ExplorationConfig)."""

    temperature: float = 1.0
    """Softmax temperature τ for discrete choices; 0 = argmax."""
    epsilon: float = 0.0
    """ε of ε-greedy mixing with the uniform distribution."""
    std_scale: float = 1.0
    """Multiplies exp(log_std) of continuous actions; 0 = the deterministic mean."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise OPEInputError("Exploration.temperature", f"expected >= 0, got {self.temperature}")
        if not 0 <= self.epsilon <= 1:
            raise OPEInputError("Exploration.epsilon", f"expected a value in [0, 1], got {self.epsilon}")
        if self.std_scale < 0:
            raise OPEInputError("Exploration.std_scale", f"expected >= 0, got {self.std_scale}")


def discrete_probabilities(logits: npt.ArrayLike, exploration: Exploration = Exploration()) -> FloatArray:
    """logits (N, n) → probabilities (N, n), the serving rule."""
    z = np.asarray(logits, dtype=np.float64)
    if exploration.temperature == 0:
        base = np.zeros_like(z)
        base[np.arange(z.shape[0]), np.argmax(z, axis=1)] = 1.0
    else:
        base = softmax(z / exploration.temperature, axis=1)
    return (1 - exploration.epsilon) * base + exploration.epsilon / z.shape[1]  # type: ignore[no-any-return]


def clipped_gaussian_log_density(
    actions: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike, low: float, high: float
) -> FloatArray:
    """Log-density of clipped actions under a clipped diagonal Gaussian: all (N, A) → (N,).

    Inside the box: log φ((a − μ)/σ) − log σ; at a bound: the log of the mass
    the Gaussian puts beyond it (serving/exploration.py, module docstring).
    """
    a = np.asarray(actions, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(std, dtype=np.float64)
    z = (a - mu) / sigma
    inside = -0.5 * z * z - _LOG_SQRT_2PI - np.log(sigma)
    at_low = log_ndtr((low - mu) / sigma)
    at_high = log_ndtr(-(high - mu) / sigma)
    per_entry = np.where(a <= low, at_low, np.where(a >= high, at_high, inside))
    return per_entry.sum(axis=1)  # type: ignore[no-any-return]


class OnnxPolicy:
    """One registered policy version, evaluated with onnxruntime on CPU (one thread per session)."""

    def __init__(
        self,
        spec: ProblemSpec,
        model_path: Path | None,
        agent_paths: Mapping[str, Path] | None = None,
        exploration: Exploration = Exploration(),
        name: str = "policy",
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.exploration = exploration
        self.name = name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._session = (
            ort.InferenceSession(str(model_path), opts, providers=providers) if model_path is not None else None
        )
        self._agents = {
            k: ort.InferenceSession(str(p), opts, providers=providers) for k, p in (agent_paths or {}).items()
        }
        if self._session is None and not self._agents:
            raise OPEInputError("model_path", "a policy needs model.onnx or one ONNX file per agent")

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, problem: str, version: str, exploration: Exploration = Exploration()
    ) -> OnnxPolicy:
        """Load and verify `version` (or "production" = the promoted one) of `problem`."""
        loaded: LoadedVersion = registry.current(problem) if version == PRODUCTION else registry.load(problem, version)
        m = loaded.manifest
        model = loaded.path / MODEL_FILE if MODEL_FILE in m.files else None
        agents = {agent: loaded.file(fname) for agent, fname in m.agents.items()}
        if model is None and not agents:
            raise RegistryError(f"{problem}/{m.version} has neither {MODEL_FILE} nor per-agent files")
        return cls(get_problem(problem), model, agents, exploration, name=f"{problem}/{m.version}")

    # -- raw outputs -----------------------------------------------------
    def _run(self, obs: FloatArray, agent: str | None = None) -> dict[str, FloatArray]:
        session = self._agents[agent] if agent is not None else self._session
        assert session is not None
        names = [o.name for o in session.get_outputs()]
        outs = session.run(names, {"observation": obs.astype(np.float32)})
        return {n: np.asarray(v, dtype=np.float64) for n, v in zip(names, outs, strict=True)}

    def _obs(self, observations: npt.ArrayLike) -> FloatArray:
        x = np.asarray(observations, dtype=np.float64)
        d = self.spec.observation_size
        allowed = (d, len(RANK_STAGES) * d) if self.spec.name == "rank" else (d,)
        if x.ndim != 2 or x.shape[1] not in allowed:
            raise OPEInputError("observation", f"{self.spec.name}: expected shape (N, one of {allowed}), got {x.shape}")
        return x

    # -- discrete --------------------------------------------------------
    def action_probabilities(self, observations: npt.ArrayLike) -> list[FloatArray]:
        """One (N, n_k) probability table per action component (one for `slot`, six for `allocate`)."""
        x = self._obs(observations)
        action = self.spec.action
        if isinstance(action, DiscreteAction):
            return [discrete_probabilities(self._run(x)["logits"], self.exploration)]
        if isinstance(action, MultiDiscreteAction):
            scores = self._run(x)["action_scores"]
            if scores.shape[1] != sum(action.nvec):
                raise OPEInputError("action_scores", f"expected {sum(action.nvec)} columns, got {scores.shape[1]}")
            bounds = np.cumsum((0, *action.nvec))
            return [
                discrete_probabilities(scores[:, s:e], self.exploration)
                for s, e in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        raise OPEInputError("problem", f"{self.spec.name} has continuous actions; use log_density / mean_action")

    def probability(self, observations: npt.ArrayLike, actions: npt.ArrayLike) -> FloatArray:
        """Probability of each logged (multi-)discrete action: actions (N,) or (N, C) → (N,)."""
        tables = self.action_probabilities(observations)
        a = np.rint(np.asarray(actions, dtype=np.float64)).astype(np.int64)
        if a.ndim == 1:
            a = a[:, None]
        if a.shape != (tables[0].shape[0], len(tables)):
            raise OPEInputError("action", f"expected shape ({tables[0].shape[0]}, {len(tables)}), got {a.shape}")
        p = np.ones(a.shape[0])
        for k, t in enumerate(tables):
            if a[:, k].min() < 0 or a[:, k].max() >= t.shape[1]:
                raise OPEInputError("action", f"component {k} must be in [0, {t.shape[1]})")
            p = p * t[np.arange(a.shape[0]), a[:, k]]
        return p

    # -- continuous ------------------------------------------------------
    def gaussian(self, observations: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(mean, std) of the continuous action, each (N, A); std already scaled by std_scale."""
        x = self._obs(observations)
        if not isinstance(self.spec.action, BoxAction):
            raise OPEInputError("problem", f"{self.spec.name} has discrete actions; use probability()")
        d = self.spec.observation_size
        stage_obs = [x] if x.shape[1] == d else [x[:, i * d : (i + 1) * d] for i in range(len(RANK_STAGES))]
        means, log_stds = [], []
        for i, o in enumerate(stage_obs):
            if self._agents and self._session is None:
                out = self._run(o, RANK_STAGES[i] if len(stage_obs) > 1 else None)
            else:
                out = self._run(o)
            m, ls = out["action_mean"], out["action_log_std"]
            if len(stage_obs) > 1 and m.shape[1] == self.spec.action.size:
                width = self.spec.action.size // len(RANK_STAGES)
                m, ls = m[:, i * width : (i + 1) * width], ls[:, i * width : (i + 1) * width]
            means.append(m)
            log_stds.append(ls)
        mean, log_std = np.concatenate(means, axis=1), np.concatenate(log_stds, axis=1)
        if mean.shape[1] != self.spec.action.size:
            raise OPEInputError("action_mean", f"expected {self.spec.action.size} entries, got {mean.shape[1]}")
        # Same clamp as serving: a degenerate export cannot give σ = 0 or ∞.
        std = self.exploration.std_scale * np.exp(np.clip(log_std, -20.0, 2.0))
        return mean, std

    def mean_action(self, observations: npt.ArrayLike) -> FloatArray:
        """The deterministic action (the mean clipped to the box), (N, A): the NCIS kernel centre."""
        assert isinstance(self.spec.action, BoxAction)
        mean, _ = self.gaussian(observations)
        return np.clip(mean, self.spec.action.low, self.spec.action.high)

    def log_density(self, observations: npt.ArrayLike, actions: npt.ArrayLike) -> FloatArray:
        """Clipped-Gaussian log-density of each logged action, (N, A) → (N,) (0 when std_scale = 0)."""
        action = self.spec.action
        assert isinstance(action, BoxAction)
        mean, std = self.gaussian(observations)
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != mean.shape:
            raise OPEInputError("action", f"expected shape {mean.shape}, got {a.shape}")
        if self.exploration.std_scale == 0:
            same = np.all(np.isclose(a, np.clip(mean, action.low, action.high)), axis=1)
            return np.where(same, 0.0, -np.inf)
        return clipped_gaussian_log_density(a, mean, std, action.low, action.high)
