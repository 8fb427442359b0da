"""In-process onnxruntime backend: providers, thread settings, output checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from models.problems import SLOT
from models.registry import ModelRegistry
from serving.backends import OnnxRuntimeBackend, gpu_present, ort_providers, triton_model_name
from serving.errors import InferenceError
from tests.support.onnx_models import register_policy


@pytest.fixture
def slot_model(tmp_path: Path) -> Path:
    return register_policy(ModelRegistry(tmp_path / "registry"), "slot", "v1").model_path


def test_cpu_host_gets_the_cpu_provider_only(slot_model: Path) -> None:
    if gpu_present():
        pytest.skip("this host has a GPU; see the gpu test")
    assert ort_providers("auto") == ["CPUExecutionProvider"]
    backend = OnnxRuntimeBackend(slot_model, ["logits"], intra_op_threads=2)
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
    assert backend.session.get_session_options().intra_op_num_threads == 2
    out = asyncio.run(backend.score({"observation": np.zeros((3, SLOT.observation_size), np.float32)}))
    assert out["logits"].shape == (3, 7) and out["logits"].dtype == np.float32


def test_missing_output_and_bad_input_raise_inference_errors(slot_model: Path) -> None:
    with pytest.raises(InferenceError, match=r"outputs \['action_scores'\] missing"):
        OnnxRuntimeBackend(slot_model, ["action_scores"])
    backend = OnnxRuntimeBackend(slot_model, ["logits"])
    with pytest.raises(InferenceError, match="onnxruntime failed"):
        asyncio.run(backend.score({"observation": np.zeros((1, 5), np.float32)}))


def test_triton_model_names_are_safe() -> None:
    assert triton_model_name("rank", "2026-11-21.a", "pre_rank") == "rank__2026-11-21.a__pre_rank"
    assert triton_model_name("slot", "v/1") == "slot__v_1"


@pytest.mark.gpu
def test_gpu_host_runs_the_cuda_provider(slot_model: Path) -> None:
    backend = OnnxRuntimeBackend(slot_model, ["logits"], cuda="auto")
    assert backend.session.get_providers()[0] == "CUDAExecutionProvider"
    never = OnnxRuntimeBackend(slot_model, ["logits"], cuda="never")
    assert never.session.get_providers() == ["CPUExecutionProvider"]
