"""The `rank` behaviour policy as a registered ONNX model: fixed fusion weights with Gaussian exploration.

The loop needs a production policy before anything is learned: it is what the
decision API serves on day one, what logs the decisions (with their
log-densities) that offline training and off-policy evaluation learn from, and
the baseline the gate compares candidates with. By default this is the
simulators' sensible heuristic (models/problems.py `RANK.default_action`:
watch time 1.0, each interaction 0.3, at every stage; the demo passes a more
conservative mean) as a constant Gaussian: the ONNX graph
maps any observation to `action_mean` = the default weights and
`action_log_std` = log σ, and serving samples from it, clipped to [0, 1]
(serving/exploration.py).

The graph is built with `onnx.helper` (no torch: pipelines may run where
training is not installed). `observation · 0 + bias` keeps the batch axis.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import numpy as np

from models.problems import RANK
from models.registry import ArtifactManifest, LoadedVersion, ModelRegistry, TensorSpec

BEHAVIOUR_ALGORITHM = "behaviour"


def behaviour_onnx(path: Path, mean: tuple[float, ...], std: float) -> Path:
    """Write the constant-Gaussian `rank` policy to `path` (opset 17, dynamic batch)."""
    import onnx
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="troupe")
    model.ir_version = 8  # readable by every onnxruntime the project pins
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def register_behaviour_policy(
    registry: ModelRegistry,
    version: str = "behaviour-v1",
    *,
    std: float = 0.15,
    mean: tuple[float, ...] | None = None,
    promote: bool = True,
) -> LoadedVersion:
    """Register (once) and by default promote the `rank` behaviour policy; returns the verified version."""
    if version in {m.version for m in registry.list("rank")}:
        loaded = registry.load("rank", version)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = behaviour_onnx(Path(tmp) / "model.onnx", mean or RANK.default_action, std)
            manifest = ArtifactManifest(
                name="rank-behaviour",
                version=version,
                problem="rank",
                algorithm=BEHAVIOUR_ALGORITHM,
                created_at=dt.datetime.now(dt.UTC),
                inputs=[TensorSpec(name="observation", shape=["batch", RANK.observation_size])],
                outputs=[TensorSpec(name=o, shape=["batch", RANK.action.flat_size]) for o in RANK.onnx_outputs],
                feature_service=RANK.feature_service,
                metrics={"exploration_std": std},
            )
            loaded = registry.register(manifest, {"model.onnx": model})
    if promote:
        registry.promote("rank", version)
    return loaded
