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

Trust region (section `trust_region`, training/rl/trust_region.py; off unless
`min_ess_share` > 0): after training, the actor is stepped back toward its
behaviour-cloned start to the largest step whose effective sample size on the
day's logged rows is at least that share of them, measured exactly as the
evaluate step will (the exported ONNX file's densities against the logged
log-densities). It reads the logged observations, actions and log-densities,
never a reward column, so it does not peek at what the gate estimates. The
step and its ESS are written to `train/done.json` (`trust_region`) and the
metrics (`trust_region/step`, `trust_region/ess_share`).
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
# The runner settings a scheduled run always gets: TensorBoard files in the run folder and a progress bar in the task log.
FIXED_RUN: dict[str, Any] = {"tensorboard": True, "progress": True}
TRUST_REGION = "trust_region"


def sectioned_config(config: dict[str, Any], run_fields: set[str]) -> dict[str, dict[str, Any]]:
    """A flat or sectioned override mapping → {"run": {...}, "algo": {...}}."""
    if set(config) <= {"run", "algo", TRUST_REGION}:
        return {
            "run": dict(config.get("run", {})),
            "algo": dict(config.get("algo", {})),
            TRUST_REGION: dict(config.get(TRUST_REGION, {})),
        }
    return {
        "run": {k: v for k, v in config.items() if k in run_fields},
        "algo": {k: v for k, v in config.items() if k not in run_fields},
        TRUST_REGION: {},
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
        TRUST_REGION: {**base.get(TRUST_REGION, {}), **over[TRUST_REGION]},
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
    trust = require("training.rl.trust_region", None, POLICIES)
    trust_cfg = trust.TrustRegionConfig(**effective[TRUST_REGION])
    result = train_mod.train_problem(problem, algo, data=str(dataset), config=effective)
    export = require("training.export", "export_policy", POLICIES)
    # What ships (`shipped_policy`: a constrained learner's best feasible iterate online; offline the actor).
    actor, region = require("training.rl.losses", "shipped_policy", POLICIES)(result.learner), None
    if trust_cfg.enabled:
        actor, region = trust_region_actor(spec, result, Path(dataset), trust_cfg, out_dir / "trust_region")
    # Exported (and parity-checked) now, so the evaluate step scores exactly the file that would ship.
    files = export(actor, spec, out_dir / "onnx")
    agents = {a.name: str(files[f"{a.name}.onnx"].path) for a in spec.agents if f"{a.name}.onnx" in files}
    metrics = {k: float(v) for k, v in (result.history[-1] if result.history else {}).items()}
    if region is not None:
        metrics |= {"trust_region/step": region["step"], "trust_region/ess_share": region["ess_share"]}
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
            TRUST_REGION: region,
        },
    )


def logged_ess_share(spec: Any, actor: Any, logged: dict[str, Any], folder: Path) -> float:
    """ESS / rows of `actor` on the logged rows, as the evaluate step computes it (exported file, clipped Gaussian)."""
    export = require("training.export", "export_policy", POLICIES)
    policies = require("training.ope.policies", None, POLICIES)
    weights = require("training.ope.weights", None, POLICIES)
    files = export(actor, spec, folder)
    agents = {a.name: files[f"{a.name}.onnx"].path for a in spec.agents if f"{a.name}.onnx" in files}
    model = files["model.onnx"].path if "model.onnx" in files else None
    policy = policies.OnnxPolicy(spec, model, agents)
    target = policy.log_density(logged["observation"], logged["action"])
    diag = weights.importance_weights(target, logged["log_density"], log_space=True).diagnostics
    return float(diag.ess_share)


def read_logged_actions(dataset: Path) -> dict[str, Any]:
    """Observations, actions and logged log-densities of a continuous-action dataset: no reward column is read."""
    import numpy as np
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in dataset.rglob("*.parquet")) if dataset.is_dir() else [str(dataset)]
    table = ds.dataset(files, format="parquet").to_table(columns=["observation", "action", "log_density"])
    return {
        "observation": np.asarray(table.column("observation").to_pylist(), dtype=np.float64),
        "action": np.asarray(table.column("action").to_pylist(), dtype=np.float64),
        "log_density": table.column("log_density").to_numpy(zero_copy_only=False).astype(np.float64),
    }


CLONED_ACTOR_FILE = "cloned_actor.safetensors"


def stepped_actor(trained: Any, cloned_state: dict[str, Any], step: float, std_floor: bool) -> Any:
    """θ_bc + step·(θ − θ_bc), with log σ floored at the cloned actor's when `std_floor` (the module that ships)."""
    trust = require("training.rl.trust_region", None, POLICIES)
    networks = require("training.rl.networks", None, POLICIES)
    actor = trust.actor_at(trained, cloned_state, step)
    if std_floor and not isinstance(trained, networks.JointActor):
        return trust.StdFloor(actor, trust.actor_at(trained, cloned_state, 0.0))
    return actor


def shipped_actor(trained_actor: Any, trained: dict[str, Any]) -> Any:
    """The module the train step exported: the trained actor, or its trust-region step (`trained["trust_region"]`)."""
    region = trained.get(TRUST_REGION)
    if not region:
        return trained_actor
    runtime = require("training.rl.runtime", None, POLICIES)
    cloned = runtime.load_checkpoint(Path(trained["checkpoint"]).parent / CLONED_ACTOR_FILE)
    return stepped_actor(trained_actor, cloned, float(region["step"]), bool(region["std_floor"]))


def trust_region_actor(spec: Any, result: Any, dataset: Path, cfg: Any, folder: Path) -> tuple[Any, dict[str, Any]]:
    """The trained actor stepped back toward its behaviour-cloned start (training/rl/trust_region.py), and a report.

    Only the logged observations, actions and log-densities are read (`read_logged_actions`): the step is
    chosen by overlap alone, never by a reward, so the gate's estimate of the chosen candidate stays honest.
    The cloned actor's parameters are saved next to the checkpoint (`CLONED_ACTOR_FILE`) so the export
    step can rebuild exactly this module.
    """
    trust = require("training.rl.trust_region", None, POLICIES)
    networks = require("training.rl.networks", None, POLICIES)
    runtime = require("training.rl.runtime", None, POLICIES)
    if not isinstance(spec.action, BoxAction):
        raise ValueError(f"trust_region: needs a continuous-action problem (logged log-densities); {spec.name} is not")
    anchor = result.cloned_actor_state
    if anchor is None:
        raise ValueError(
            "trust_region: needs an offline run with a behaviour-cloning warm start (warm_start_steps > 0)"
        )
    trained = result.learner.actor
    runtime.save_checkpoint(folder.parent / CLONED_ACTOR_FILE, anchor)
    logged = read_logged_actions(dataset)
    floor = bool(cfg.std_floor and not isinstance(trained, networks.JointActor))
    found = trust.line_search(
        lambda t: logged_ess_share(spec, stepped_actor(trained, anchor, t, floor), logged, folder / f"step_{t:.4f}"),
        cfg.min_ess_share,
        cfg.bisection_steps,
    )
    report = {
        "step": found.step,
        "ess_share": found.ess_share,
        "min_ess_share": cfg.min_ess_share,
        "met": found.met,
        "std_floor": floor,
        "tried": [[t, s] for t, s in found.tried],
    }
    print(
        f"trust region: step {found.step:.3f} of the way from the behaviour-cloned actor to the trained one, "
        f"ESS {found.ess_share:.1%} of {len(logged['log_density'])} logged rows (asked >= {cfg.min_ess_share:.0%}); "
        f"tried {', '.join(f'{t:.3f}: {s:.1%}' for t, s in found.tried)}",
        flush=True,
    )
    return stepped_actor(trained, anchor, found.step, floor), report


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
