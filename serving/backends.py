"""Inference backends behind one small Protocol: `score(inputs) -> outputs`.

* `OnnxRuntimeBackend` runs the ONNX file in-process (the default). The CUDA
  provider is used only when onnxruntime lists it *and* a GPU device node
  exists: the onnxruntime-gpu wheel lists CUDA even on CPU-only hosts.
* `TritonBackend` sends the same tensors to a Triton Inference Server over
  HTTP or gRPC with tritonclient's asyncio clients, so a slow server never
  blocks the event loop and the per-request deadline can cancel the call.

Every backend takes and returns float32 arrays keyed by tensor name; the
input is always "observation" [batch, obs_size] (models/problems.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from serving.errors import InferenceError

FloatArray = npt.NDArray[np.float32]
INPUT_NAME = "observation"


class InferenceBackend(Protocol):
    """Scores one batch: input tensors by name → output tensors by name."""

    name: str

    async def score(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]: ...

    async def close(self) -> None: ...


def gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def ort_providers(cuda: Literal["auto", "never"] = "auto") -> list[str]:
    """Execution providers for a new session, best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if cuda == "auto" and "CUDAExecutionProvider" in available and gpu_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """One onnxruntime session on a verified model file."""

    def __init__(
        self,
        model_path: Path,
        output_names: Sequence[str],
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        cuda: Literal["auto", "never"] = "auto",
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        # One worker per core serves many small requests: spinning threads
        # would steal the core from the event loop between calls.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=ort_providers(cuda))
        self.output_names = list(output_names)
        # A stage model with a recurrent message (MA-RDPG, serving/rank_messages.py): input "message"
        # (batch, S), output "next_message" — fetched with the spec's outputs.
        message = [i for i in self.session.get_inputs() if i.name == "message"]
        self.message_size = int(message[0].shape[1]) if message else 0
        if self.message_size and "next_message" not in self.output_names:
            self.output_names.append("next_message")
        have = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.output_names if n not in have]
        if missing:
            raise InferenceError(f"{model_path}: outputs {missing} missing; the model has {sorted(have)}")
        self.name = "onnxruntime"

    def score_sync(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        try:
            outs = self.session.run(self.output_names, dict(inputs))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs, strict=True)}

    async def score(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        # A small MLP takes microseconds: running it inline is cheaper than a
        # thread hop, and a thread could not interrupt it anyway.
        return self.score_sync(inputs)

    async def close(self) -> None:
        return None


def triton_model_name(problem: str, version: str, agent: str | None = None) -> str:
    """The Triton model name of one registry version (and agent): Triton versions are integers, ours are not."""
    raw = f"{problem}__{version}" + (f"__{agent}" if agent else "")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


class TritonBackend:
    """A model on a Triton Inference Server, called over HTTP or gRPC (asyncio clients)."""

    def __init__(
        self,
        url: str,
        model_name: str,
        output_names: Sequence[str],
        protocol: Literal["http", "grpc"] = "http",
        timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.output_names = list(output_names)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.name = f"triton_{protocol}"
        self._client: Any = None

    def _get_client(self) -> Any:
        # Created lazily inside the running loop: aiohttp and grpc.aio bind to it.
        if self._client is None:
            if self.protocol == "http":
                import tritonclient.http.aio as httpclient

                self._client = httpclient.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
            else:
                import tritonclient.grpc.aio as grpcclient

                self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def score(self, inputs: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        if self.protocol == "http":
            import tritonclient.http.aio as mod
        else:
            import tritonclient.grpc.aio as mod
        client = self._get_client()
        tensors = []
        for name, arr in inputs.items():
            t = mod.InferInput(name, list(arr.shape), "FP32")
            t.set_data_from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            tensors.append(t)
        requested = [mod.InferRequestedOutput(n) for n in self.output_names]
        try:
            if self.protocol == "http":
                # The caller's deadline (asyncio.timeout) bounds the HTTP call;
                # tritonclient's own `timeout` is a server-side queue limit in µs.
                result = await client.infer(self.model_name, tensors, outputs=requested)
            else:
                result = await client.infer(self.model_name, tensors, outputs=requested, client_timeout=self.timeout_s)
        except Exception as exc:  # connection refused, server error, timeout
            raise InferenceError(f"Triton {self.protocol} {self.url} model {self.model_name}: {exc}") from exc
        out: dict[str, FloatArray] = {}
        for n in self.output_names:
            arr = result.as_numpy(n)
            if arr is None:
                raise InferenceError(f"Triton model {self.model_name} returned no output {n!r}")
            out[n] = np.asarray(arr, dtype=np.float32)
        return out

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
