"""Tiny linear ONNX policies for the OPE tests: each output = observation @ W + b."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.problems import get_problem
from models.registry import ArtifactManifest, ModelRegistry, TensorSpec


def write_linear_onnx(path: Path, obs_size: int, outputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    nodes, inits, outs = [], [], []
    for name, (w, b) in outputs.items():
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
            numpy_helper.from_array(b.astype(np.float32), f"{name}_b"),
        ]
        nodes += [
            helper.make_node("MatMul", ["observation", f"{name}_w"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [name]),
        ]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", w.shape[1]]))
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", obs_size])],
        outs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def register_linear_policy(
    registry: ModelRegistry, problem: str, version: str, outputs: dict[str, tuple[np.ndarray, np.ndarray]], tmp: Path
) -> None:
    spec = get_problem(problem)
    path = write_linear_onnx(tmp / f"{problem}-{version}.onnx", spec.observation_size, outputs)
    manifest = ArtifactManifest(
        name=f"{problem}-linear",
        version=version,
        problem=problem,
        algorithm="linear-test",
        created_at=dt.datetime.now(dt.UTC),
        inputs=[TensorSpec(name="observation", shape=["batch", spec.observation_size])],
        outputs=[TensorSpec(name=n, shape=["batch", w.shape[1]]) for n, (w, _) in outputs.items()],
        feature_service=spec.feature_service,
    )
    registry.register(manifest, {"model.onnx": path})
