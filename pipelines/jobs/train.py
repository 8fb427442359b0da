"""Train a candidate policy offline on one run's transitions dataset, and export it to ONNX for evaluation.

`run_train(problem, dataset, run_dir, algo=..., config=..., seed=...)` calls
the same entry point as `troupe train` (training/train.py `train_problem`,
which also reads `rank`'s three side-by-side stage observations) and writes
into `<run_dir>/train/`: the safetensors checkpoint, metrics and curves, and
`onnx/model.onnx` (plus per-agent files for multi-agent algorithms) exported
and parity-checked by training/export.py. The evaluate step scores exactly
these files against production; only if the gate passes are they registered.

Configuration: the algorithm's default file `configs/<problem>/<algo>.yaml`
when it exists, overlaid with `config`, which is either sectioned like that
file (`{"run": {...}, "algo": {...}}`) or flat (keys of `RunConfig` go to
`run`, every other key to `algo`). Unknown keys are refused by name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from models.problems import BoxAction, get_problem
from pipelines.jobs.loop import read_done, require, write_done

TRAIN_DIR = "train"
POLICIES = "the policies issue (#5): training/train.py, training/algorithms/ and training/export.py"
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
# The runner settings a scheduled run always gets: no TensorBoard files, no progress bar in task logs.
FIXED_RUN: dict[str, Any] = {"tensorboard": False, "progress": False}


def sectioned_config(config: dict[str, Any], run_fields: set[str]) -> dict[str, dict[str, Any]]:
    """A flat or sectioned override mapping → {"run": {...}, "algo": {...}}."""
    if set(config) <= {"run", "algo"}:
        return {"run": dict(config.get("run", {})), "algo": dict(config.get("algo", {}))}
    return {
        "run": {k: v for k, v in config.items() if k in run_fields},
        "algo": {k: v for k, v in config.items() if k not in run_fields},
    }


def effective_config(problem: str, algo: str, config: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """Default file ⊕ overrides ⊕ the run's seed and folder."""
    train_mod = require("training.train", None, POLICIES)
    trainer = require("training.rl.trainer", None, POLICIES)
    run_fields = {f.name for f in dataclasses.fields(trainer.RunConfig)}
    default_file = CONFIG_ROOT / problem / f"{algo}.yaml"
    base = train_mod.load_config_file(default_file) if default_file.is_file() else {}
    over = sectioned_config(config, run_fields)
    return {
        "run": {**base.get("run", {}), **over["run"], **FIXED_RUN, "seed": seed, "out_dir": str(out_dir)},
        "algo": {**base.get("algo", {}), **over["algo"]},
    }


def run_train(
    problem: str,
    dataset: str | Path,
    run_dir: str | Path,
    *,
    algo: str,
    config: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train `algo` on `dataset`; returns {checkpoint, onnx, agents, algorithm, metrics, run_dir}. Idempotent per run."""
    train_mod = require("training.train", None, POLICIES)
    registry = require("training.rl.registry", None, POLICIES)
    if algo not in registry.algorithm_names():
        raise ValueError(f"algo: unknown algorithm {algo!r} for {problem}; known: {registry.algorithm_names()}")
    config = dict(config or {})
    out_dir = Path(run_dir) / TRAIN_DIR
    done = read_done(out_dir)
    if (
        done is not None
        and done.get("algorithm") == algo
        and done.get("overrides") == config
        and done.get("seed") == seed
    ):
        return done
    spec = get_problem(problem)
    effective = effective_config(problem, algo, config, seed, out_dir)
    result = train_mod.train_problem(problem, algo, data=str(dataset), config=effective)
    export = require("training.export", "export_policy", POLICIES)
    # Exported (and parity-checked) now, so the evaluate step scores exactly the file that would ship.
    files = export(result.learner.actor, spec, out_dir / "onnx")
    agents = {a.name: str(files[f"{a.name}.onnx"].path) for a in spec.agents if f"{a.name}.onnx" in files}
    metrics = {k: float(v) for k, v in (result.history[-1] if result.history else {}).items()}
    return write_done(
        out_dir,
        {
            "problem": problem,
            "algorithm": algo,
            "overrides": config,
            "config": effective,
            "seed": seed,
            "checkpoint": str(out_dir / "checkpoint.safetensors"),
            "onnx": str(files["model.onnx"].path),
            "agents": agents,
            "metrics": metrics,
            "transitions": int(result.transitions),
            "seconds": float(result.seconds),
            "run_dir": str(Path(run_dir)),
        },
    )


def load_learner(problem: str, trained: dict[str, Any]) -> Any:
    """The trained loss module (its `actor` is the policy) rebuilt from the train step's checkpoint and config."""
    registry = require("training.rl.registry", None, POLICIES)
    runtime = require("training.rl.runtime", None, POLICIES)
    task_mod = require("training.rl.task", None, POLICIES)
    entry = registry.get_algorithm(trained["algorithm"])
    if entry.loss is None:
        raise TypeError(f"algorithm {trained['algorithm']!r} has no loss module to rebuild")
    spec = get_problem(problem)
    cfg = entry.config.from_dict(dict(trained["config"]["algo"]))
    task = task_mod.TaskSpec.from_problem(spec, multi_agent=entry.multi_agent)
    init_mean = tuple(spec.default_action) if isinstance(spec.action, BoxAction) else None
    learner = entry.loss(task, cfg, init_mean)
    learner.load_state_tensors(runtime.load_checkpoint(Path(trained["checkpoint"])))
    return learner.eval()
