"""Triton python-backend model that runs `model.onnx` (next to this file) with onnxruntime.

Written by `troupe triton export-repo --variant cpu` into `<model>/1/model.py`.
It is the CPU/test stand-in for `platform: "onnxruntime_onnx"`: the same ONNX
file, the same tensor names, requests of one dynamic batch concatenated into
one onnxruntime call. Runs in Triton's own Python (the .venv-triton venv).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [b.shape[0] for b in batches]
        joined = np.concatenate(batches, axis=0).astype(np.float32)
        outputs = self.session.run(self.output_names, {self.input_name: joined})
        responses = []
        start = 0
        for n in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + n], dtype=np.float32))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
