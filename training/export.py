"""Export trained actors to ONNX, check parity with onnxruntime, register them in the model registry.

Contract (models/problems.py): input "observation" float32 [batch, obs_size]
with a dynamic batch axis; outputs named by the problem spec (`rank`:
"action_mean" [batch, 18] already inside the action bounds, and
"action_log_std" [batch, 18]). Multi-agent cascades export one ONNX per stage
actor (input "observation" [batch, 24] → "action_mean"/"action_log_std"
[batch, 6]), listed in `ArtifactManifest.agents`, plus a combined model.onnx
that runs every stage actor on the same observation and concatenates their
outputs in stage order.

Every file is checked at export: |torch − onnxruntime| ≤ 1e-5 on 1,000 random
observations, else `ParityError`. Opset 17, TorchScript exporter (the dynamo
exporter needs onnxscript, which the project does not ship).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.errors import TroupeError
from models.problems import ProblemSpec
from models.registry import ArtifactManifest, DataRange, LoadedVersion, ModelRegistry, TensorSpec
from training.rl.networks import JointActor

OPSET = 17
PARITY_TOLERANCE = 1e-5
PARITY_SAMPLES = 1000


class ParityError(TroupeError):
    """onnxruntime disagrees with torch on an exported file; the file must not ship."""


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_abs_diff: float


class _Combined(nn.Module):
    """All stage actors on the same observation, outputs concatenated in stage order."""

    def __init__(self, actors: Sequence[nn.Module]) -> None:
        super().__init__()
        self.actors = nn.ModuleList(actors)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [a(obs) for a in self.actors]
        return tuple(torch.cat([o[k] for o in outs], dim=-1) for k in range(len(outs[0])))


def _outputs_of(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        y = module(x)
    return list(y) if isinstance(y, tuple | list) else [y]


def export_module(
    module: nn.Module, obs_size: int, output_names: Sequence[str], path: Path, seed: int = 0
) -> ExportedFile:
    """Export `module` (observation → outputs) to `path` and check parity; raises ParityError on mismatch."""
    module = module.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, obs_size)
    outs = _outputs_of(module, example)
    if len(outs) != len(output_names):
        raise ValueError(f"module returns {len(outs)} outputs but the contract names {list(output_names)}")
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["observation"],
        output_names=list(output_names),
        dynamic_axes={"observation": {0: "batch"}, **{n: {0: "batch"} for n in output_names}},
        opset_version=OPSET,
        dynamo=False,
    )
    diff = check_parity(module, path, obs_size, output_names, seed=seed)
    return ExportedFile(
        path,
        [TensorSpec(name="observation", shape=["batch", obs_size])],
        [TensorSpec(name=n, shape=["batch", int(o.shape[1])]) for n, o in zip(output_names, outs, strict=True)],
        diff,
    )


def check_parity(
    module: nn.Module,
    path: Path,
    obs_size: int,
    output_names: Sequence[str],
    n: int = PARITY_SAMPLES,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> float:
    """max |torch − onnxruntime| over `n` random observations (standard normal, the scale of the
    normalised features, plus a few large values); raises ParityError above `tolerance`."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, obs_size, generator=g)
    x[: n // 10] *= 5.0
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(list(output_names), {"observation": x.numpy().astype(np.float32)})
    except Exception as err:  # a corrupted file fails to load or run: that is a parity failure too
        raise ParityError(f"{path}: onnxruntime could not run the exported file ({err}); re-export it") from None
    want = _outputs_of(module.cpu().eval(), x)
    worst = 0.0
    for name, a, b in zip(output_names, want, got, strict=True):
        if tuple(a.shape) != tuple(b.shape):
            raise ParityError(f"{path}: output {name!r} has shape {b.shape} in onnxruntime, {tuple(a.shape)} in torch")
        d = float(np.max(np.abs(a.numpy() - b)))
        worst = max(worst, d)
        if not d <= tolerance:
            raise ParityError(
                f"{path}: output {name!r} differs from torch by {d:.3g} > {tolerance:g} on {n} random inputs; "
                "the file does not match the trained actor — re-export it"
            )
    return worst


def export_policy(actor: nn.Module, spec: ProblemSpec, out_dir: Path) -> dict[str, ExportedFile]:
    """model.onnx for a single actor; for a `JointActor` also one file per agent (`<agent>.onnx`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = spec.onnx_outputs
    files: dict[str, ExportedFile] = {}
    if isinstance(actor, JointActor):
        agents = [a.name for a in spec.agents]
        if len(agents) != len(actor.agents):
            raise ValueError(f"problem {spec.name!r} has agents {agents}; the actor has {len(actor.agents)}")
        for name, agent, obs_size in zip(agents, actor.agents, actor.obs_sizes, strict=True):
            files[f"{name}.onnx"] = export_module(agent, obs_size, names, out_dir / f"{name}.onnx")
        if len(set(actor.obs_sizes)) != 1 or actor.obs_sizes[0] != spec.observation_size:
            raise ValueError("a combined model.onnx needs every agent to read the problem's observation")
        files["model.onnx"] = export_module(
            _Combined(list(actor.agents)), spec.observation_size, names, out_dir / "model.onnx"
        )
    else:
        module = actor.export_module() if hasattr(actor, "export_module") else actor
        files["model.onnx"] = export_module(module, spec.observation_size, names, out_dir / "model.onnx")
    return files


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def register_policy(
    registry: ModelRegistry,
    spec: ProblemSpec,
    algorithm: str,
    version: str,
    files: Mapping[str, ExportedFile],
    metrics: Mapping[str, float] | None = None,
    data_range: tuple[dt.datetime, dt.datetime] | None = None,
    extra_files: Mapping[str, Path] | None = None,
) -> LoadedVersion:
    """Register exported files as `<problem>/<version>` with a full manifest."""
    model = files["model.onnx"]
    agents = {a.name: f"{a.name}.onnx" for a in spec.agents if f"{a.name}.onnx" in files}
    manifest = ArtifactManifest(
        name=f"{spec.name}-{algorithm}",
        version=version,
        problem=spec.name,
        algorithm=algorithm,
        created_at=dt.datetime.now(dt.UTC),
        git_commit=git_commit(),
        data_range=DataRange(start=data_range[0], end=data_range[1]) if data_range else None,
        inputs=model.inputs,
        outputs=model.outputs,
        feature_service=spec.feature_service,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        agents=agents,
    )
    paths: dict[str, str | Path] = {name: f.path for name, f in files.items()}
    paths |= dict(extra_files or {})
    return registry.register(manifest, paths)
