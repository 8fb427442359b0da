"""ONNX export: contract names and shapes, parity at export, tamper detection, registry registration."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from models.problems import RANK
from models.registry import ModelRegistry
from training.export import ParityError, check_parity, export_policy, register_policy
from training.rl.networks import JointActor, TanhGaussianActor


def _rank_actor() -> TanhGaussianActor:
    torch.manual_seed(0)
    return TanhGaussianActor(RANK.observation_size, 18, 0.0, 1.0, (32, 32), init_mean=RANK.default_action)


def test_rank_export_matches_contract_and_registers(tmp_path: Path) -> None:
    actor = _rank_actor()
    files = export_policy(actor, RANK, tmp_path / "out")
    f = files["model.onnx"]
    assert f.max_abs_diff <= 1e-5
    model = onnx.load(str(f.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = ort.InferenceSession(str(f.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["observation"]
    assert [o.name for o in sess.get_outputs()] == ["action_mean", "action_log_std"]
    for batch in (1, 7):
        mean, log_std = sess.run(
            None, {"observation": np.random.randn(batch, RANK.observation_size).astype(np.float32)}
        )
        assert mean.shape == (batch, 18) and log_std.shape == (batch, 18)
        assert (mean >= 0).all() and (mean <= 1).all()
    reg = ModelRegistry(tmp_path / "registry")
    start, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    loaded = register_policy(reg, RANK, "tscac", "v1", files, {"watch_time": 1.5}, (start, end))
    again = reg.load("rank", "v1")
    assert again.manifest.feature_service == "rank_v1"
    assert again.manifest.outputs[0].shape == ["batch", 18]
    assert again.manifest.data_range is not None and again.manifest.data_range.start == start
    assert again.manifest.metrics == {"watch_time": 1.5}
    assert loaded.model_path.exists()


def test_parity_check_fails_when_onnx_is_altered(tmp_path: Path) -> None:
    actor = _rank_actor()
    path = export_policy(actor, RANK, tmp_path)["model.onnx"].path
    model = onnx.load(str(path))
    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1e-2  # a tiny edit to one weight
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    with pytest.raises(ParityError, match="differs from torch"):
        check_parity(actor, path, RANK.observation_size, RANK.onnx_outputs)
    path.write_bytes(b"not an onnx file")
    with pytest.raises(ParityError, match="could not run"):
        check_parity(actor, path, RANK.observation_size, RANK.onnx_outputs)


def test_multi_agent_export_per_stage_and_combined(tmp_path: Path) -> None:
    torch.manual_seed(1)
    mean = RANK.default_action
    size = RANK.observation_size
    actor = JointActor(
        [size, size, size],
        [TanhGaussianActor(size, 6, 0.0, 1.0, (16,), init_mean=mean[6 * k : 6 * k + 6]) for k in range(3)],
    )
    files = export_policy(actor, RANK, tmp_path / "ma")
    assert set(files) == {"pre_rank.onnx", "rank.onnx", "re_rank.onnx", "model.onnx"}
    obs = np.random.randn(5, RANK.observation_size).astype(np.float32)
    parts = []
    for stage in ("pre_rank", "rank", "re_rank"):
        sess = ort.InferenceSession(str(files[f"{stage}.onnx"].path), providers=["CPUExecutionProvider"])
        mean, _ = sess.run(None, {"observation": obs})
        assert mean.shape == (5, 6)
        parts.append(mean)
    combined = ort.InferenceSession(str(files["model.onnx"].path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(combined.run(None, {"observation": obs})[0], np.concatenate(parts, 1), atol=1e-6)
    reg = ModelRegistry(tmp_path / "registry")
    loaded = register_policy(reg, RANK, "ma_cascade", "v1", files)
    assert loaded.manifest.agents == {"pre_rank": "pre_rank.onnx", "rank": "rank.onnx", "re_rank": "re_rank.onnx"}
    assert loaded.file("rank.onnx").exists()
