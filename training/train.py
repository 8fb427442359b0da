"""Training entry point: `python -m training.train` (also under `torchrun --nproc_per_node=N`) and `troupe train`.

    python -m training.train --problem rank --algo tscac --sim --config configs/rank/tscac.yaml
    torchrun --nproc_per_node=2 -m training.train --problem rank --algo tscac --data var/datasets/rank
    python -m training.train --env package.module:EnvClass --config my_env.yaml

A config file (YAML or TOML) has these optional sections:

    algorithm: the registered algorithm's name (training/rl/registry.py); --algo overrides it
    run:    RunConfig fields (seed, iterations, rollout_steps, n_envs, offline_steps, device, out_dir, …)
    algo:   the algorithm's config fields (e.g. TSCACConfig: lam, hidden, actor_lr, …)
    online: algorithm fields applied only when training in an environment (exploration, advantage)
    sim:    simulator overrides passed to make_batched (e.g. days: 3) — Troupe problems only
    env:    keyword arguments of the environment class — `--env` only
    task:   `--env` only: signals (main first) with discounts, constraints with thresholds:
              task:
                signals: [{name: reward, discount: 0.9}, {name: cost, discount: 0.9}]
                constraints: [{signal: cost, direction: "<=", threshold: 0.2}]

Unknown keys are refused by name. Command-line flags override the file. Outputs go to
`run.out_dir`, by default $TROUPE_HOME/runs/<task>/<algorithm>. Rank 0 writes metrics.jsonl
(live), TensorBoard events (live), metrics.csv, curves.png (skip: --no-plots),
checkpoint.safetensors (+ best_feasible.safetensors for constrained tasks trained online)
and `result.json`; with `--export` it also exports ONNX (parity-checked) and with
`--registry` registers the version.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from models.problems import BoxAction, Constraint, DiscreteAction, MultiDiscreteAction, get_problem
from training.rl.data import GymEnvPool, TransitionBatch, dataset_observation_size, load_transitions
from training.rl.registry import algorithm_names, get_algorithm
from training.rl.task import TaskSignal, TaskSpec
from training.rl.trainer import OfflineSource, OnlineSource, PolicyStart, RunConfig, RunResult, default_out_dir, train

# `trust_region` is read by the retraining job (pipelines/jobs/train.py), which steps the trained actor back
# toward its behaviour-cloned start after training (training/rl/trust_region.py); `troupe train` ignores it.
CONFIG_SECTIONS = ("algorithm", "problem", "run", "algo", "online", "sim", "env", "task", "trust_region")


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """YAML (.yaml/.yml) or TOML (.toml) → dict of the sections in `CONFIG_SECTIONS`."""
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
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"config file {p}: unknown section(s) {unknown}; allowed: {', '.join(CONFIG_SECTIONS)}")
    return data


def _run_config(data: dict[str, Any]) -> RunConfig:
    return RunConfig.from_dict(data)


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
    policy_start: PolicyStart | None = None,
) -> RunResult:
    """Train on a Troupe problem: its simulator (`sim`) or a logged dataset (`data`), exactly one.

    `policy_start` (ours, `--sim` only, None = off): the learner starts at a state-dependent rule (`PolicyStart`)."""
    spec_algo = get_algorithm(algo)
    if spec_algo.loss is None and spec_algo.fit is None:
        raise ValueError(f"--algo {algo!r} is not trained by gradient steps; choose one of {_trainable()}")
    if sim == (data is not None):
        raise ValueError("give exactly one of --sim (train in the simulator) or --data <dataset> (train from logs)")
    spec = get_problem(problem)
    cfg_data = config or {}
    run_fields = {**cfg_data.get("run", {}), **(run_overrides or {})}
    run_fields.setdefault("out_dir", str(default_out_dir(problem, algo)))
    sim_overrides = dict(cfg_data.get("sim", {}))
    task = TaskSpec.from_problem(spec, multi_agent=spec_algo.multi_agent)
    init_mean = tuple(spec.default_action) if task.continuous else None
    source: OnlineSource | OfflineSource
    if data is not None:
        source = OfflineSource(_offline_batch(data, task, spec.observation_size))
    elif spec_algo.data == "offline":
        # Learns from logs only (bc): log the simulator's behaviour policy first.
        from training.rl.sim import behaviour_rollout

        rc = _run_config(run_fields)
        seed = rc.seed + 1000 * int(os.environ.get("RANK", "0"))
        source = OfflineSource(
            behaviour_rollout(problem, task, rc.n_envs, rc.rollout_steps * 4, seed, **sim_overrides).flatten()
        )
    else:
        from training.rl.sim import BatchedSimPool

        source = OnlineSource(
            lambda n, seed: BatchedSimPool(problem, n, task, multi_agent=spec_algo.multi_agent, **sim_overrides)
        )
    sections = {"run": run_fields, "algo": cfg_data.get("algo", {}), "online": cfg_data.get("online", {})}
    return train(algo, task, source, sections, init_mean=init_mean, policy_start=policy_start)


def _trainable() -> list[str]:
    return [n for n in algorithm_names() if get_algorithm(n).loss is not None or get_algorithm(n).fit is not None]


def load_env_class(target: str) -> Any:
    """`package.module:EnvClass` → the class (or factory); a clear error for a bad path."""
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--env {target!r}: expected 'package.module:EnvClass'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--env {target!r}: cannot import module {module_name!r} ({err})") from None
    if not hasattr(module, attr):
        raise ValueError(f"--env {target!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def task_from_env(env: Any, section: dict[str, Any], name: str) -> TaskSpec:
    """The TaskSpec of a Gymnasium env: sizes from its spaces, signals and constraints from the `task:` section."""
    import gymnasium as gym
    import numpy as np

    unknown = sorted(set(section) - {"signals", "constraints", "name"})
    if unknown:
        raise ValueError(f"task: unknown field(s) {unknown}; allowed: signals, constraints, name")
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise ValueError(
            f"--env: observation_space must be a gymnasium Box (flat floats), got {type(obs_space).__name__}"
        )
    action: BoxAction | DiscreteAction | MultiDiscreteAction
    if isinstance(act_space, gym.spaces.Box):
        low, high = np.unique(act_space.low), np.unique(act_space.high)
        if len(low) != 1 or len(high) != 1 or not np.isfinite(low[0]) or not np.isfinite(high[0]):
            raise ValueError("--env: a Box action_space needs one finite low and one finite high for every component")
        action = BoxAction(size=int(np.prod(act_space.shape)), low=float(low[0]), high=float(high[0]))
    elif isinstance(act_space, gym.spaces.Discrete):
        action = DiscreteAction(n=int(act_space.n))
    elif isinstance(act_space, gym.spaces.MultiDiscrete):
        action = MultiDiscreteAction(nvec=tuple(int(n) for n in act_space.nvec))
    else:
        raise ValueError(f"--env: action_space must be Box, Discrete or MultiDiscrete, got {type(act_space).__name__}")
    raw_signals = section.get("signals") or [{"name": "reward", "discount": 0.99}]
    if not isinstance(raw_signals, list):
        raise ValueError("task.signals: expected a list of {name, discount} (main signal first)")
    signals = []
    for i, sig in enumerate(raw_signals):
        if not isinstance(sig, dict) or set(sig) - {"name", "discount"} or "name" not in sig:
            raise ValueError(f"task.signals[{i}]: expected {{name: str, discount: float}}, got {sig!r}")
        signals.append(TaskSignal(str(sig["name"]), float(sig.get("discount", 0.99))))
    constraints = []
    for i, c in enumerate(section.get("constraints") or []):
        if not isinstance(c, dict) or {"signal", "direction", "threshold"} - set(c):
            raise ValueError(
                f"task.constraints[{i}]: expected {{signal, direction: '>=' or '<=', threshold}}, got {c!r}"
            )
        constraints.append(
            Constraint(str(c["signal"]), c["direction"], float(c["threshold"]), str(c.get("description", "")))
        )
    return TaskSpec(
        obs_size=int(np.prod(obs_space.shape)),
        action=action,
        signals=tuple(signals),
        constraints=tuple(constraints),
        name=str(section.get("name", name)),
    )


def train_env(
    env_target: str,
    algo: str | None,
    config: dict[str, Any] | None = None,
    run_overrides: dict[str, Any] | None = None,
) -> RunResult:
    """Train any Gymnasium env that follows the vector-reward convention (`info["signals"]`)."""
    cfg_data = config or {}
    algo = algo or cfg_data.get("algorithm")
    if not algo:
        raise ValueError("no algorithm: pass --algo or put `algorithm: <name>` in the config file")
    spec_algo = get_algorithm(algo)
    trainable = spec_algo.loss is not None or spec_algo.fit is not None
    if not trainable or spec_algo.multi_agent or spec_algo.data == "offline":
        raise ValueError(
            f"--env trains single-agent online algorithms; {algo!r} is not one (choose one of {_trainable()})"
        )
    env_cls = load_env_class(env_target)
    env_kwargs = dict(cfg_data.get("env") or {})
    probe = env_cls(**env_kwargs)
    task = task_from_env(probe, dict(cfg_data.get("task") or {}), name=env_target.rpartition(":")[2])
    if hasattr(probe, "close"):
        probe.close()
    run_fields = {**cfg_data.get("run", {}), **(run_overrides or {})}
    run_fields.setdefault("out_dir", str(default_out_dir(task.name, algo)))
    source = OnlineSource(lambda n, seed: GymEnvPool([lambda: env_cls(**env_kwargs)] * n, task))
    sections = {"run": run_fields, "algo": cfg_data.get("algo", {}), "online": cfg_data.get("online", {})}
    return train(algo, task, source, sections)


def export_and_register(
    result: RunResult, problem: str, algo: str, export_dir: Path, registry: str | None, version: str | None
) -> dict[str, Any]:
    from training.export import export_policy, register_policy
    from training.rl.losses import shipped_policy

    spec = get_problem(problem)
    learner: Any = result.learner
    # A learner with its own serving export (MA-RDPG: stage models with a message input and output).
    own = getattr(learner, "export_for_serving", None)
    # What ships: a constrained learner's best feasible iterate (`shipped_policy`), not its last one.
    files = own(export_dir) if own is not None else export_policy(shipped_policy(learner), spec, export_dir)
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
    p.add_argument("--algo", help="registered algorithm (training/rl/registry.py)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", action="store_true", help="train online in the problem's simulator")
    src.add_argument("--data", help="train offline from a Parquet transition dataset")
    src.add_argument("--env", help="train online in any Gymnasium env: package.module:EnvClass")
    p.add_argument("--config", help="YAML or TOML config file (sections: " + ", ".join(CONFIG_SECTIONS) + ")")
    p.add_argument("--seed", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--out-dir")
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true", help="skip curves.png")
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
    if a.no_plots:
        overrides["plots"] = False
    config = load_config_file(a.config)
    if a.env:
        if a.export or a.registry:
            raise ValueError("--export/--registry need a Troupe problem (its ONNX contract); not available with --env")
        result = train_env(a.env, a.algo, config, overrides)
        algo, problem = result.learner.algorithm, None
    else:
        algo = a.algo or config.get("algorithm")
        if not algo:
            raise ValueError("no algorithm: pass --algo or put `algorithm: <name>` in the config file")
        problem = a.problem
        result = train_problem(problem, algo, sim=a.sim, data=a.data, config=config, run_overrides=overrides)
    summary: dict[str, Any] = {
        "algorithm": algo,
        "problem": problem,
        "env": a.env,
        "out_dir": str(result.out_dir),
        "transitions": result.transitions,
        "seconds": result.seconds,
        "final": result.history[-1] if result.history else {},
        "best_feasible": result.best_feasible,
        "config": asdict(result.learner.cfg),
    }
    if int(os.environ.get("RANK", "0")) == 0:
        if problem is not None and (a.export or a.registry):
            summary |= export_and_register(
                result, problem, algo, Path(a.export or result.out_dir / "onnx"), a.registry, a.version
            )
        result.out_dir.mkdir(parents=True, exist_ok=True)
        (result.out_dir / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
