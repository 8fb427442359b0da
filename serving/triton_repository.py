"""Write a Triton model repository from the model registry.

One Triton model per registry version (and per agent file of multi-agent
versions), named `<problem>__<version>[__<agent>]` (serving/backends.py
`triton_model_name`): Triton's own versions are integers, ours are strings.

Two variants of `config.pbtxt`:

* `gpu` (production): `platform: "onnxruntime_onnx"`, dynamic batching,
  `instance_group [{ kind: KIND_GPU }]`, the ONNX file as `1/model.onnx`.
* `cpu` (tests, CPU hosts): `backend: "python"` running the same ONNX file with
  onnxruntime (templates/python_onnx_model.py), `KIND_CPU`, dynamic batching.

Every file is copied from a version `ModelRegistry.load` has verified (sha256).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.problems import get_problem
from models.registry import LoadedVersion, ModelRegistry
from serving.backends import triton_model_name

Variant = Literal["gpu", "cpu"]
# The python-backend model file lives with the other Triton templates in infra/.
TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "triton" / "templates" / "python_onnx_model.py"


@dataclass(frozen=True)
class RepositoryOptions:
    """How the exported models are configured."""

    variant: Variant = "gpu"
    """gpu: onnxruntime_onnx on KIND_GPU (production); cpu: python backend on KIND_CPU (tests)."""
    max_batch_size: int = 256
    """Largest batch Triton's dynamic batcher forms."""
    max_queue_delay_us: int = 100
    """How long the batcher waits to fill a batch; small, since decisions are latency bound."""
    instances: int = 1
    """Model instances per device."""

    def __post_init__(self) -> None:
        if self.variant not in ("gpu", "cpu"):
            raise ValueError(f"RepositoryOptions.variant: expected 'gpu' or 'cpu', got {self.variant!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"RepositoryOptions.max_batch_size: expected >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"RepositoryOptions.max_queue_delay_us: expected >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"RepositoryOptions.instances: expected >= 1, got {self.instances}")


def _dims(shape: list[int | str]) -> str:
    # The leading batch axis is implied by max_batch_size; the rest must be fixed.
    rest = shape[1:]
    if any(not isinstance(d, int) for d in rest):
        raise ValueError(f"Triton needs fixed non-batch dimensions, got {shape}")
    return ", ".join(str(d) for d in rest)


def config_pbtxt(name: str, version: LoadedVersion, options: RepositoryOptions, output_size: int | None = None) -> str:
    """The config.pbtxt text of one model; `output_size` overrides the manifest (per-agent files)."""
    m = version.manifest
    lines = [f'name: "{name}"']
    if options.variant == "gpu":
        lines.append('platform: "onnxruntime_onnx"')
    else:
        lines.append('backend: "python"')
    lines.append(f"max_batch_size: {options.max_batch_size}")
    inputs = [f'  {{ name: "{t.name}" data_type: TYPE_FP32 dims: [ {_dims(t.shape)} ] }}' for t in m.inputs]
    outputs = [
        f'  {{ name: "{t.name}" data_type: TYPE_FP32 dims: [ {output_size if output_size else _dims(t.shape)} ] }}'
        for t in m.outputs
    ]
    lines.append("input [\n" + ",\n".join(inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(outputs) + "\n]")
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}")
    kind = "KIND_GPU" if options.variant == "gpu" else "KIND_CPU"
    lines.append(f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]")
    return "\n".join(lines) + "\n"


def _write_model(repo: Path, name: str, onnx_file: Path, config: str, options: RepositoryOptions) -> Path:
    folder = repo / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    shutil.copyfile(onnx_file, folder / "1" / "model.onnx")
    if options.variant == "cpu":
        shutil.copyfile(TEMPLATE, folder / "1" / "model.py")
    (folder / "config.pbtxt").write_text(config)
    return folder


def export_repository(
    registry: ModelRegistry,
    repo: Path,
    problems: list[str],
    options: RepositoryOptions,
    versions: dict[str, list[str]] | None = None,
) -> list[str]:
    """Write every registered version of each problem (or the ones given); returns the Triton model names."""
    repo.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for problem in problems:
        spec = get_problem(problem)
        names = (versions or {}).get(problem) or [m.version for m in registry.list(problem)]
        for version in names:
            loaded = registry.load(problem, version)  # sha256-verified
            name = triton_model_name(problem, version)
            _write_model(repo, name, loaded.model_path, config_pbtxt(name, loaded, options), options)
            written.append(name)
            # Serving scores per-agent files only for rank (one fusion-weight head per stage).
            agents = loaded.manifest.agents if problem == "rank" else {}
            for agent, file in agents.items():
                aname = triton_model_name(problem, version, agent)
                config = config_pbtxt(aname, loaded, options, output_size=spec.agent(agent).action.flat_size)
                _write_model(repo, aname, loaded.file(file), config, options)
                written.append(aname)
    return written
