"""Training entry point: `python -m training.train` (also under `torchrun --nproc_per_node=N`) and `troupe train`.

    python -m training.train --problem rank --algo tscac --sim --config configs/rank/tscac.yaml
    torchrun --nproc_per_node=2 -m training.train --problem rank --algo tscac --data var/datasets/rank

A config file (YAML or TOML) has three optional sections:

    run:   RunConfig fields (seed, iterations, rollout_steps, n_envs, offline_steps, device, out_dir, …)
    algo:  the algorithm's config fields (e.g. TSCACConfig: lam, hidden, actor_lr, …)
    sim:   simulator overrides passed to make_batched (e.g. days: 3)

Unknown keys are refused by name. Command-line flags override the file.
Rank 0 writes metrics.csv, TensorBoard events, curves.png, checkpoint.safetensors
and `result.json`; with `--export` it also exports ONNX (parity-checked) and
with `--registry` registers the version.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from models.problems import get_problem
from training.algorithms import bc, ma_cascade, main_only, rcpo, tscac
from training.rl.data import TransitionBatch, dataset_observation_size, load_transitions
from training.rl.learner import LearnerConfig
from training.rl.loop import OfflineSource, OnlineSource, RunConfig, RunResult
from training.rl.task import TaskSpec


@dataclass(frozen=True)
class AlgorithmEntry:
    config: type[LearnerConfig]
    train: Callable[..., RunResult]
    multi_agent: bool = False


ALGORITHMS: dict[str, AlgorithmEntry] = {
    "tscac": AlgorithmEntry(tscac.TSCACConfig, tscac.train),
    "ma_cascade": AlgorithmEntry(ma_cascade.MACascadeConfig, ma_cascade.train, multi_agent=True),
    "bc": AlgorithmEntry(bc.BCConfig, bc.train),
    "main_only": AlgorithmEntry(main_only.MainOnlyConfig, main_only.train),
    "rcpo": AlgorithmEntry(rcpo.RCPOConfig, rcpo.train),
}


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """YAML (.yaml/.yml) or TOML (.toml) → dict with sections run / algo / sim."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    if p.suffix == ".toml":
        data = tomllib.loads(p.read_text())
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(p.read_text()) or {}
    else:
        raise ValueError(f"config file {p}: use .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ValueError(f"config file {p}: the top level must be a mapping")
    unknown = sorted(set(data) - {"run", "algo", "sim", "algorithm", "problem"})
    if unknown:
        raise ValueError(
            f"config file {p}: unknown section(s) {unknown}; allowed: run, algo, sim (and algorithm, problem)"
        )
    return data


def _run_config(data: dict[str, Any]) -> RunConfig:
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"run: unknown field(s) {unknown}; allowed: {sorted(known)}")
    return RunConfig(**data)


def _offline_batch(path: str, task: TaskSpec, single_obs_size: int) -> TransitionBatch:
    """Load a dataset whose rows hold either the request's observation or every stage's side by side.

    `rank` logs carry the three stage observations concatenated (3 × 24, serving
    logs what each stage actor saw). A single-agent learner takes the first one
    (the retrieved pool as pre-rank sees it — the simulator's single view); a
    multi-agent learner takes all three, or repeats a lone observation for every agent.
    """
    width = dataset_observation_size(path)
    if width == task.obs_size:
        return load_transitions(path, task)
    b = load_transitions(path, replace(task, obs_size=width, agents=()))
    if not task.agents and width > task.obs_size:
        return replace(b, obs=b.obs[:, : task.obs_size], next_obs=b.next_obs[:, : task.obs_size])
    if task.agents and width == single_obs_size:
        k = len(task.agents)
        return replace(b, obs=b.obs.repeat(1, k), next_obs=b.next_obs.repeat(1, k))
    raise ValueError(f"dataset {path}: observations have {width} values; the task needs {task.obs_size}")


def train_problem(
    problem: str,
    algo: str,
    *,
    sim: bool = False,
    data: str | None = None,
    config: dict[str, Any] | None = None,
    run_overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Build the task, source and configs, then train. Exactly one of `sim` / `data`."""
    if algo not in ALGORITHMS:
        raise ValueError(f"--algo {algo!r}: choose one of {sorted(ALGORITHMS)}")
    if sim == (data is not None):
        raise ValueError("give exactly one of --sim (train in the simulator) or --data <dataset> (train from logs)")
    entry = ALGORITHMS[algo]
    spec = get_problem(problem)
    cfg_data = config or {}
    run_cfg = _run_config({**cfg_data.get("run", {}), **(run_overrides or {})})
    algo_cfg = entry.config.from_dict(cfg_data.get("algo", {}))
    sim_overrides = dict(cfg_data.get("sim", {}))
    task = TaskSpec.from_problem(spec, multi_agent=entry.multi_agent)
    init_mean = tuple(spec.default_action) if task.continuous else None
    source: OnlineSource | OfflineSource
    if data is not None:
        source = OfflineSource(_offline_batch(data, task, spec.observation_size))
    elif algo == "bc":
        from training.rl.sim import behaviour_rollout

        seed = run_cfg.seed + 1000 * int(os.environ.get("RANK", "0"))
        source = OfflineSource(
            behaviour_rollout(problem, task, run_cfg.n_envs, run_cfg.rollout_steps * 4, seed, **sim_overrides).flatten()
        )
    else:
        from training.rl.sim import BatchedSimPool

        source = OnlineSource(
            lambda n, seed: BatchedSimPool(problem, n, task, multi_agent=entry.multi_agent, **sim_overrides)
        )
    return entry.train(algo_cfg, run_cfg, task, source, init_mean=init_mean)


def export_and_register(
    result: RunResult, problem: str, algo: str, export_dir: Path, registry: str | None, version: str | None
) -> dict[str, Any]:
    from training.export import export_policy, register_policy

    spec = get_problem(problem)
    files = export_policy(result.learner.actor, spec, export_dir)
    out: dict[str, Any] = {
        "exported": {k: str(v.path) for k, v in files.items()},
        "parity_max_abs_diff": max(f.max_abs_diff for f in files.values()),
    }
    if registry:
        from models.registry import ModelRegistry

        last = result.history[-1] if result.history else {}
        metrics = {k.replace("/", "."): v for k, v in last.items() if k.startswith("charts/signal_")}
        v = register_policy(
            ModelRegistry(registry),
            spec,
            algo,
            version or f"{algo}-{result.out_dir.name}",
            files,
            metrics,
            result.data_range,
        )
        out["registered"] = f"{v.manifest.problem}/{v.manifest.version}"
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--problem", default="rank")
    p.add_argument("--algo", required=True, choices=sorted(ALGORITHMS))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="train online in the simulator")
    src.add_argument("--data", help="train offline from a Parquet transition dataset")
    p.add_argument("--config", help="YAML or TOML config file (sections run / algo / sim)")
    p.add_argument("--seed", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--out-dir")
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--export", help="folder for the ONNX files (rank 0)")
    p.add_argument("--registry", help="model-registry root to register the exported version in")
    p.add_argument("--version", help="registry version name")
    a = p.parse_args(argv)
    overrides: dict[str, Any] = {}
    for key, val in (("seed", a.seed), ("iterations", a.iterations), ("out_dir", a.out_dir), ("device", a.device)):
        if val is not None:
            overrides[key] = val
    if a.no_progress:
        overrides["progress"] = False
    result = train_problem(
        a.problem, a.algo, sim=a.sim, data=a.data, config=load_config_file(a.config), run_overrides=overrides
    )
    summary: dict[str, Any] = {
        "algorithm": a.algo,
        "problem": a.problem,
        "out_dir": str(result.out_dir),
        "transitions": result.transitions,
        "seconds": result.seconds,
        "final": result.history[-1] if result.history else {},
        "config": asdict(result.learner.cfg),
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if a.export or a.registry:
            summary |= export_and_register(
                result, a.problem, a.algo, Path(a.export or result.out_dir / "onnx"), a.registry, a.version
            )
        (result.out_dir / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
