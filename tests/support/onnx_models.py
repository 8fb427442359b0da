"""Small ONNX policies with each problem's input/output contract, built with onnx.helper (no torch).

`register_policy(registry, problem, version)` writes a two-layer MLP
observation → hidden → outputs and registers it with a manifest whose tensor
specs follow models/problems.py. `bias` shifts the output so two versions
decide differently (used by swap and A/B tests).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.problems import ALLOCATE, RANK, RANK_STAGES, SLOT, get_problem
from models.registry import ArtifactManifest, LoadedVersion, ModelRegistry, TensorSpec

OUTPUT_SIZES: dict[str, dict[str, int]] = {
    "rank": {"action_mean": RANK.action.flat_size, "action_log_std": RANK.action.flat_size},
    "slot": {"logits": SLOT.action.n},  # type: ignore[union-attr]
    "allocate": {"action_scores": sum(ALLOCATE.action.nvec)},  # type: ignore[union-attr]
}
HIDDEN = 16
OPSET = 17


def mlp_model(
    obs_size: int, outputs: dict[str, int], seed: int = 0, bias: float = 0.0, sigmoid: bool = False
) -> onnx.ModelProto:
    """observation [batch, obs_size] → Relu(Gemm) → one Gemm per output; `action_log_std` is a constant −1."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (obs_size, HIDDEN)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (HIDDEN,)).astype(np.float32), "b1"),
    ]
    nodes = [
        helper.make_node("Gemm", ["observation", "w1", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
    ]
    outs = []
    for name, size in outputs.items():
        if name == "action_log_std":
            w = np.zeros((HIDDEN, size), dtype=np.float32)
            b = np.full((size,), -1.0, dtype=np.float32)
        else:
            w = rng.normal(0, 0.5, (HIDDEN, size)).astype(np.float32)
            b = (rng.normal(0, 0.1, (size,)) + bias).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w_{name}"), numpy_helper.from_array(b, f"b_{name}")]
        if sigmoid and name == "action_mean":
            nodes.append(helper.make_node("Gemm", ["h", f"w_{name}", f"b_{name}"], [f"{name}_pre"]))
            nodes.append(helper.make_node("Sigmoid", [f"{name}_pre"], [name]))
        else:
            nodes.append(helper.make_node("Gemm", ["h", f"w_{name}", f"b_{name}"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", size]))
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", obs_size])],
        outs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="troupe-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def register_policy(
    registry: ModelRegistry,
    problem: str,
    version: str,
    seed: int = 0,
    bias: float = 0.0,
    per_agent: bool = False,
    promote: bool = False,
) -> LoadedVersion:
    """Build, save and register one policy version (optionally promote it)."""
    spec = get_problem(problem)
    outputs = OUTPUT_SIZES[problem]
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, str] = {}
        path = Path(tmp) / "model.onnx"
        onnx.save(mlp_model(spec.observation_size, outputs, seed, bias, sigmoid=problem == "rank"), path)
        files["model.onnx"] = str(path)
        agents: dict[str, str] = {}
        if per_agent and problem == "rank":
            for i, stage in enumerate(RANK_STAGES):
                p = Path(tmp) / f"{stage}.onnx"
                onnx.save(
                    mlp_model(spec.observation_size, {k: 6 for k in outputs}, seed + 100 + i, bias, sigmoid=True), p
                )
                files[p.name] = str(p)
                agents[stage] = p.name
        manifest = ArtifactManifest(
            name=f"test-{problem}-mlp",
            version=version,
            problem=problem,
            algorithm="test_mlp",
            created_at=dt.datetime.now(dt.UTC),
            inputs=[TensorSpec(name="observation", shape=["batch", spec.observation_size])],
            outputs=[TensorSpec(name=n, shape=["batch", s]) for n, s in outputs.items()],
            feature_service=spec.feature_service,
            agents=agents,
        )
        loaded = registry.register(manifest, files)
    if promote:
        registry.promote(problem, version)
    return loaded
