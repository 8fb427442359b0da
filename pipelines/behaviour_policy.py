"""Each problem's behaviour policy as a registered ONNX model: the heuristic production serves on day one.

The loop needs a production policy before anything is learned: it is what the
decision API serves on day one, what logs the decisions (with their
propensities or log-densities) that offline training and off-policy
evaluation learn from, and the baseline the gate compares candidates with.
The heuristics are the simulators' behaviour policies (training/envs/behaviour.py),
as ONNX graphs whose outputs serving turns into actions with its default
exploration (temperature 1, ε 0: it samples exactly these distributions):

* `rank` — fixed fusion weights (models/problems.py `RANK.default_action`:
  watch time 1.0, each interaction 0.3, at every stage; the demo passes a more
  conservative mean) as a constant Gaussian: `action_mean` = the weights,
  `action_log_std` = log σ, sampled and clipped to [0, 1] by serving.
* `slot` — insert the live stream at `position` with probability
  σ((predicted live watch / 60 − threshold) / temperature), else none, mixed
  with ε-uniform over all 7 actions: `logits` = log of those probabilities.
* `allocate` — the static allocation (`ALLOCATE.default_action`), each
  component replaced by a uniform draw with probability ε: `action_scores` =
  log of the per-component probabilities.

The graphs are built with `onnx.helper` (no torch: pipelines may run where
training is not installed). `observation · 0 + bias` keeps the batch axis.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.problems import ALLOCATE, RANK, SLOT, DiscreteAction, MultiDiscreteAction, get_problem
from models.registry import ArtifactManifest, LoadedVersion, ModelRegistry, TensorSpec

BEHAVIOUR_ALGORITHM = "behaviour"


def behaviour_onnx(path: Path, mean: tuple[float, ...], std: float) -> Path:
    """Write the constant-Gaussian `rank` policy to `path` (opset 17, dynamic batch)."""
    from onnx import TensorProto, helper, numpy_helper

    if not std > 0:
        raise ValueError(f"behaviour policy std: must be > 0, got {std}")
    n_obs, n_act = RANK.observation_size, RANK.action.flat_size
    if len(mean) != n_act:
        raise ValueError(f"behaviour policy mean: expected {n_act} weights (3 stages × 6), got {len(mean)}")
    zeros = numpy_helper.from_array(np.zeros((n_obs, n_act), np.float32), "zeros")
    mean_t = numpy_helper.from_array(np.asarray(mean, np.float32), "mean")
    log_std_t = numpy_helper.from_array(np.full(n_act, math.log(std), np.float32), "log_std")
    nodes = [
        helper.make_node("MatMul", ["observation", "zeros"], ["batch_zeros"]),
        helper.make_node("Add", ["batch_zeros", "mean"], ["action_mean"]),
        helper.make_node("Add", ["batch_zeros", "log_std"], ["action_log_std"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rank_behaviour",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", n_obs])],
        [
            helper.make_tensor_value_info("action_mean", TensorProto.FLOAT, ["batch", n_act]),
            helper.make_tensor_value_info("action_log_std", TensorProto.FLOAT, ["batch", n_act]),
        ],
        initializer=[zeros, mean_t, log_std_t],
    )
    return _save(graph, path)


def _save(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="troupe")
    model.ir_version = 8  # readable by every onnxruntime the project pins
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def slot_behaviour_onnx(
    path: Path, *, threshold: float = 5.0, temperature: float = 0.4, position: int = 3, epsilon: float = 0.1
) -> Path:
    """Write the `slot` heuristic (module docstring) to `path`: observation → logits (B, 7)."""
    from onnx import TensorProto, helper, numpy_helper

    assert isinstance(SLOT.action, DiscreteAction)
    n = SLOT.action.n
    if not 1 <= position < n:
        raise ValueError(f"slot behaviour position: must be in 1..{n - 1}, got {position}")
    if not 0.0 < epsilon <= 1.0:
        raise ValueError(f"slot behaviour epsilon: must be in (0, 1] so every action has a propensity, got {epsilon}")
    if not temperature > 0:
        raise ValueError(f"slot behaviour temperature: must be > 0, got {temperature}")
    column = SLOT.observation_slices()["live_candidate"].start  # predicted live watch time / 60 s
    # probs = C + p_insert · D: ε/n everywhere, the rest on "none" moved to `position` as p_insert grows.
    none_first = np.eye(n, dtype=np.float32)[0]
    const = np.full(n, epsilon / n, np.float32) + (1.0 - epsilon) * none_first
    slope = ((1.0 - epsilon) * (np.eye(n, dtype=np.float32)[position] - none_first))[None, :]
    inits = [
        numpy_helper.from_array(np.asarray([column], np.int64), "column"),
        numpy_helper.from_array(np.asarray([threshold], np.float32), "threshold"),
        numpy_helper.from_array(np.asarray([1.0 / temperature], np.float32), "inv_temperature"),
        numpy_helper.from_array(const, "const"),
        numpy_helper.from_array(slope.astype(np.float32), "slope"),
    ]
    nodes = [
        helper.make_node("Gather", ["observation", "column"], ["live_prediction"], axis=1),  # (B, 1)
        helper.make_node("Sub", ["live_prediction", "threshold"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_temperature"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p_insert"]),
        helper.make_node("MatMul", ["p_insert", "slope"], ["moved"]),  # (B, n)
        helper.make_node("Add", ["moved", "const"], ["probs"]),
        helper.make_node("Log", ["probs"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slot_behaviour",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", SLOT.observation_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])],
        initializer=inits,
    )
    return _save(graph, path)


def allocate_behaviour_onnx(path: Path, *, static: tuple[float, ...] | None = None, epsilon: float = 0.2) -> Path:
    """Write the `allocate` heuristic (module docstring) to `path`: observation → action_scores (B, Σ nvec)."""
    from onnx import TensorProto, helper, numpy_helper

    action = ALLOCATE.action
    assert isinstance(action, MultiDiscreteAction)
    chosen = [int(v) for v in (static if static is not None else ALLOCATE.default_action)]
    if len(chosen) != len(action.nvec) or any(not 0 <= c < n for c, n in zip(chosen, action.nvec, strict=True)):
        raise ValueError(
            f"allocate behaviour static: expected one choice per component within {action.nvec}, got {chosen}"
        )
    if not 0.0 < epsilon <= 1.0:
        raise ValueError(f"allocate behaviour epsilon: must be in (0, 1], got {epsilon}")
    log_probs = np.concatenate(
        [np.log(epsilon / n + (1.0 - epsilon) * (np.arange(n) == c)) for c, n in zip(chosen, action.nvec, strict=True)]
    ).astype(np.float32)
    width = log_probs.shape[0]
    nodes = [
        helper.make_node("MatMul", ["observation", "zeros"], ["batch_zeros"]),
        helper.make_node("Add", ["batch_zeros", "log_probs"], ["action_scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "allocate_behaviour",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", ALLOCATE.observation_size])],
        [helper.make_tensor_value_info("action_scores", TensorProto.FLOAT, ["batch", width])],
        initializer=[
            numpy_helper.from_array(np.zeros((ALLOCATE.observation_size, width), np.float32), "zeros"),
            numpy_helper.from_array(log_probs, "log_probs"),
        ],
    )
    return _save(graph, path)


def register_behaviour_policy(
    registry: ModelRegistry,
    version: str = "behaviour-v1",
    *,
    problem: str = "rank",
    std: float = 0.15,
    mean: tuple[float, ...] | None = None,
    promote: bool = True,
    **heuristic: Any,
) -> LoadedVersion:
    """Register (once) and by default promote a problem's behaviour policy; returns the verified version.

    `std` and `mean` shape the `rank` policy; `heuristic` holds the `slot`
    (threshold, temperature, position, epsilon) or `allocate` (static, epsilon) parameters.
    """
    spec = get_problem(problem)
    if version in {m.version for m in registry.list(problem)}:
        loaded = registry.load(problem, version)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.onnx"
            if problem == "rank":
                if heuristic:
                    raise ValueError(f"rank behaviour policy: unknown parameter(s) {sorted(heuristic)}; use std, mean")
                model = behaviour_onnx(out, mean or RANK.default_action, std)
                metrics = {"exploration_std": std}
            elif problem == "slot":
                model = slot_behaviour_onnx(out, **heuristic)
                metrics = {k: float(v) for k, v in heuristic.items()}
            else:
                model = allocate_behaviour_onnx(out, **heuristic)
                metrics = {"epsilon": float(heuristic.get("epsilon", 0.2))}
            manifest = ArtifactManifest(
                name=f"{problem}-behaviour",
                version=version,
                problem=problem,
                algorithm=BEHAVIOUR_ALGORITHM,
                created_at=dt.datetime.now(dt.UTC),
                inputs=[TensorSpec(name="observation", shape=["batch", spec.observation_size])],
                outputs=[TensorSpec(name=o, shape=["batch", _output_width(problem)]) for o in spec.onnx_outputs],
                feature_service=spec.feature_service,
                metrics=metrics,
            )
            loaded = registry.register(manifest, {"model.onnx": model})
    if promote:
        registry.promote(problem, version)
    return loaded


def _output_width(problem: str) -> int:
    """Width of each ONNX output: the flat action for `rank`, one score per choice for the discrete problems."""
    action = get_problem(problem).action
    if isinstance(action, MultiDiscreteAction):
        return sum(action.nvec)
    if isinstance(action, DiscreteAction):
        return action.n
    return action.flat_size
