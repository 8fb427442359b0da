"""Register an exported, gated candidate in the model registry (not promoted: the canary decides that).

The version name is `<algorithm>-<interval key>`, so the same run always
registers the same version: a retried task finds it registered, checks that the
registered model is byte-identical (sha256) to the exported one, and returns
it; a different file under the same name is refused, never overwritten.

The manifest records what serving needs (tensor specs read from the ONNX
graph itself, the problem's feature service), the training data's time range,
and the metrics of training and of the off-policy evaluation.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

from models.errors import RegistryError
from models.problems import get_problem
from models.registry import MODEL_FILE, ArtifactManifest, DataRange, ModelRegistry, TensorSpec, sha256_file
from models.settings import get_settings
from pipelines.jobs.loop import Interval, read_done, write_done

REGISTER_DIR = "register"


def onnx_tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output tensor specs of an ONNX file (a dynamic axis keeps its name, e.g. 'batch')."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def spec(v: Any) -> TensorSpec:
        dims: list[int | str] = [
            d.dim_param or d.dim_value if (d.dim_param or d.dim_value) else "batch"
            for d in v.type.tensor_type.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        return TensorSpec(name=v.name, dtype=dtype, shape=dims)

    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _evaluation_metrics(evaluation_report: str | None) -> dict[str, float]:
    """`eval/ope_<estimator>_<signal>` and the main signal's difference bounds from the OPE report."""
    if not evaluation_report or not Path(evaluation_report).is_file():
        return {}
    report = json.loads(Path(evaluation_report).read_text())
    primary = report["primary_estimator"]
    entry = report["estimators"][primary]
    out: dict[str, float] = {}
    for sig, v in entry["candidate"]["signals"].items():
        out[f"eval/ope_{primary}_{sig}"] = float(v["value"])
    diff = entry["difference"]["signals"][report["main_signal"]]
    out[f"eval/ope_{primary}_difference_lower"] = float(diff["ci_low"])
    out[f"eval/ope_{primary}_difference"] = float(diff["value"])
    return out


def run_register(
    problem: str, exported: dict[str, Any], data: dict[str, Any], evaluation_report: str | None = None
) -> dict[str, Any]:
    """Register the exported files as version `<algorithm>-<interval key>`; returns {version, run_dir, ...}."""
    spec = get_problem(problem)
    run_dir = Path(data["run_dir"])
    out_dir = run_dir / REGISTER_DIR
    done = read_done(out_dir)
    if done is not None:
        return done
    interval = Interval.parse(data["interval_start"], data["interval_end"])
    algorithm = str(exported["algorithm"])
    version = f"{algorithm}-{interval.key}"
    files: dict[str, Path] = {}
    if exported.get("onnx"):
        files[MODEL_FILE] = Path(exported["onnx"])
    agents: dict[str, str] = {}
    for agent, path in (exported.get("agents") or {}).items():
        fname = f"{agent}.onnx"
        files[fname] = Path(path)
        agents[agent] = fname
    # Side files a policy decides with (MaRCA: cost_table.json, load_model.json), registered and sha256-checked
    # with the model.
    for name, path in (exported.get("side_files") or {}).items():
        files[name] = Path(path)
    if MODEL_FILE not in files:
        raise RegistryError(
            f"the export of {problem} has no {MODEL_FILE}; the registry needs one (multi-agent exports add per-agent files)"
        )
    for name, path in files.items():
        if not path.is_file():
            raise RegistryError(f"exported file {path} ({name}) does not exist; re-run the export step")
    registry = ModelRegistry(get_settings().registry_dir)
    if version in {m.version for m in registry.list(problem)}:
        loaded = registry.load(problem, version)
        for name, path in files.items():
            if loaded.manifest.files.get(name) != sha256_file(path):
                raise RegistryError(
                    f"{problem}/{version} is already registered with a different {name}; "
                    f"this run's export differs from the registered one — investigate before re-registering"
                )
    else:
        inputs, outputs = onnx_tensor_specs(files[MODEL_FILE])
        metrics = {k: float(v) for k, v in (exported.get("metrics") or {}).items()}
        metrics |= _evaluation_metrics(evaluation_report)
        manifest = ArtifactManifest(
            name=f"{problem}-{algorithm}",
            version=version,
            problem=problem,
            algorithm=algorithm,
            created_at=dt.datetime.now(dt.UTC),
            git_commit=_git_commit(),
            data_range=DataRange(start=interval.start, end=interval.end),
            inputs=inputs,
            outputs=outputs,
            feature_service=spec.feature_service,
            metrics=metrics,
            agents=agents,
        )
        loaded = registry.register(manifest, {k: str(v) for k, v in files.items()})
    return write_done(
        out_dir,
        {
            "problem": problem,
            "version": version,
            "path": str(loaded.path),
            "files": dict(loaded.manifest.files),
            "run_dir": str(run_dir),
            "interval_key": interval.key,
        },
    )
