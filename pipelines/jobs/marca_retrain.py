"""`troupe_retrain_allocate` with MaRCA: train offline from the data plane's trajectories, refit cost and load models.

`run_train_marca(dataset, run_dir, config, seed)` writes into `<run_dir>/train/`:
* the learner (AWRQ-Mixer, training/algorithms/marca.py `train_offline`) trained on the run's transitions
  (observation, logged joint action, revenue) — safetensors checkpoint;
* `onnx/model.onnx` (training/algorithms/marca_export.py: per-agent mixer-slope-weighted Q, cents),
  `onnx/cost_table.json` — the AutoBucket table refitted by load tests against the simulator's cost function
  (training/algorithms/marca_cost.py), `onnx/load_model.json` — the balancer's load model refitted
  (ours: on two simulated days of the *new* agents under an excited feedback λ; the logs do not carry λ,
  and the load model must describe the agents that will serve, not the behaviour policy);
* `lambda_eval`: the λ at which the candidate spends the budget on the logged requests — the evaluate
  step scores the candidate at it (pipelines/jobs/marca_ope.py).
`run_export_marca(trained)` rebuilds the learner from its checkpoint, re-exports the graph and checks the
evaluated file against it (as pipelines/jobs/export.py does for the other algorithms); the side files go
to the registry with the model (pipelines/jobs/register.py `side_files`).

Config (flat; unknown keys are refused by name): any `MarcaConfig` field, plus `offline_steps` (Adam steps,
default 300), `load_model_days` (2), `load_model_requests` (256 per interval), and the `run`/`algo`
sections of the other algorithms' files are accepted when they only hold these keys or `iterations`
(= offline_steps).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from models.problems import ALLOCATE
from pipelines.jobs.loop import read_done, write_done
from pipelines.jobs.train import TRAIN_DIR

EXPORT_DIR = "export"
EXTRA_KEYS = {"offline_steps": 300, "load_model_days": 2, "load_model_requests": 256}


def marca_settings(config: dict[str, Any], seed: int) -> tuple[Any, dict[str, int]]:
    """(MarcaConfig, extras) from a flat or sectioned override mapping; unknown keys raise naming them."""
    from training.algorithms.marca import MarcaConfig

    flat: dict[str, Any] = {}
    if set(config) <= {"run", "algo"}:
        run = dict(config.get("run", {}))
        if "iterations" in run:
            run["offline_steps"] = run.pop("iterations")
        flat = {**run, **dict(config.get("algo", {}))}
    else:
        flat = dict(config)
    fields = {f.name for f in dataclasses.fields(MarcaConfig)}
    unknown = sorted(set(flat) - fields - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"train_config: unknown key(s) {unknown} for marca; known: {sorted(fields | set(EXTRA_KEYS))}")
    extras = {k: int(flat.pop(k, v)) for k, v in EXTRA_KEYS.items()}
    return MarcaConfig(**{**flat, "seed": seed}), extras


def simulated_load_history(learner: Any, days: int, requests: int, seed: int) -> Any:
    """The new agents on `days` simulated days under a feedback λ with multiplicative noise (excitation);
    returns the fitted `CurveLoadModel` (or the exp `LoadModel` when λ never moved compute)."""
    from serving.balancer import BalancerError, CurveLoadModel, LoadModel
    from training.algorithms import marca as M
    from training.envs.allocate import AllocateConfig, BatchedAllocateSim

    config = AllocateConfig()
    cost = M.CostTable.from_simulator(config, learner.split)
    rng = np.random.default_rng([seed, 13])
    feedback = M.FeedbackLambda(0.95, 1.5)

    def controller(obs: np.ndarray) -> float:
        return feedback(obs) * float(np.exp(0.4 * rng.standard_normal()))

    policy = M.MarcaPolicy(learner, cost, controller)
    u, q, lam, slot = [], [], [], []
    for day in range(days):
        sim = BatchedAllocateSim(requests, config, 500 + seed * 10 + day, autoreset=False)
        obs = sim.reset(500 + seed * 10 + day)
        feedback.reset()
        while True:
            obs, _, done, info = sim.step(policy(obs))
            u.append(info["utilisation"])
            q.append(info["load"])
            lam.append(policy.lam)
            slot.append(int(info["interval"]) % config.intervals_per_day)
            if done.all():
                break
    arrays = np.asarray(u), np.asarray(q), np.asarray(lam)
    try:
        return CurveLoadModel.fit(*arrays, np.asarray(slot, np.int64), config.intervals_per_day)
    except BalancerError:
        return LoadModel.fit(*arrays)


def run_train_marca(
    dataset: str | Path, run_dir: str | Path, *, config: dict[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train MaRCA offline on `dataset`, refit cost and load models, export; idempotent per run."""
    import torch

    from pipelines.jobs.evaluate import read_transitions
    from pipelines.jobs.marca_ope import MarcaOnnxPolicy
    from training.algorithms import marca as M
    from training.algorithms import marca_export as X
    from training.algorithms.marca_cost import fit_autobucket
    from training.envs.allocate import AllocateConfig
    from training.rl.runtime import save_checkpoint

    config = dict(config or {})
    out_dir = Path(run_dir) / TRAIN_DIR
    done = read_done(out_dir)
    if (
        done is not None
        and done.get("algorithm") == "marca"
        and done.get("overrides") == config
        and done.get("seed") == seed
    ):
        return done
    cfg, extras = marca_settings(config, seed)
    torch.set_num_threads(1)
    t = read_transitions(Path(dataset), ALLOCATE)
    revenue = t.rewards[:, list(t.signals).index("revenue")]
    result = M.train_offline(cfg, t.observation, t.action, revenue, extras["offline_steps"])
    learner = result.learner
    save_checkpoint(out_dir / "checkpoint.safetensors", learner.state_dict(), {"algorithm": "marca"})
    cost = fit_autobucket(AllocateConfig(), seed=seed)
    load_model = simulated_load_history(learner, extras["load_model_days"], extras["load_model_requests"], seed)
    files = X.export_policy(learner, cost, out_dir / "onnx", load_model=load_model.to_dict())
    candidate = MarcaOnnxPolicy.from_files(files[X.MODEL_FILE], files[X.COST_FILE])
    lam = candidate.calibrate_lambda(t.observation, ALLOCATE.constraints[0].threshold)
    last = result.history[-1] if result.history else {}
    return write_done(
        out_dir,
        {
            "problem": "allocate",
            "algorithm": "marca",
            "overrides": config,
            "config": {"algo": dataclasses.asdict(cfg), "extras": extras},
            "seed": seed,
            "checkpoint": str(out_dir / "checkpoint.safetensors"),
            "onnx": str(files[X.MODEL_FILE]),
            "agents": {},
            "side_files": {X.COST_FILE: str(files[X.COST_FILE]), X.LOAD_MODEL_FILE: str(files[X.LOAD_MODEL_FILE])},
            "lambda_eval": lam,
            "metrics": {
                "train/td_loss": float(last.get("td_loss", float("nan"))),
                "load_model/rmse": float(load_model.rmse),
                "cost/contention": float(cost.contention),
                "eval/lambda": lam,
            },
            "transitions": int(t.observation.shape[0]),
            "seconds": float(result.seconds),
            "run_dir": str(Path(run_dir)),
        },
    )


def run_export_marca(trained: dict[str, Any]) -> dict[str, Any]:
    """Rebuild from the checkpoint, re-export, check the evaluated graph against it; returns `register`'s input."""
    from pipelines.jobs.export import ExportParityError, onnx_outputs
    from training.algorithms import marca as M
    from training.algorithms import marca_export as X
    from training.rl.runtime import load_checkpoint

    run_dir = Path(trained["run_dir"])
    out_dir = run_dir / EXPORT_DIR
    done = read_done(out_dir)
    if done is not None:
        return done
    learner = M.MarcaLearner(M.MarcaConfig(**trained["config"]["algo"]))
    learner.load_state_dict(load_checkpoint(Path(trained["checkpoint"])))
    fresh = out_dir / "onnx" / X.MODEL_FILE
    X.export_serving_graph(learner.eval(), fresh)
    # realistic observations (request values 0 … 1,000 cents): the graph exponentiates the value column
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (1000, ALLOCATE.observation_size)).astype(np.float32)
    x[:, 0] = np.log1p(rng.uniform(0.0, 1000.0, 1000)) / 5.0
    try:
        a = onnx_outputs(Path(trained["onnx"]), x)[X.OUTPUT]
    except Exception as err:  # noqa: BLE001 — a corrupted file fails to load: that is a parity failure too
        raise ExportParityError(f"{trained['onnx']}: onnxruntime cannot run it ({err}); re-run training") from None
    b = onnx_outputs(fresh, x)[X.OUTPUT]
    parity = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    if not parity <= 1e-5:
        raise ExportParityError(f"{trained['onnx']}: differs from the trained checkpoint by {parity:.3g} (relative)")
    for name, path in trained["side_files"].items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path} is missing; re-run the train step")
    return write_done(
        out_dir,
        {
            "problem": "allocate",
            "algorithm": "marca",
            "onnx": trained["onnx"],
            "agents": {},
            "side_files": dict(trained["side_files"]),
            "checkpoint": trained["checkpoint"],
            "metrics": {**(trained.get("metrics") or {}), "export/parity_max_abs_diff": parity},
            "parity": {X.MODEL_FILE: parity},
            "run_dir": str(run_dir),
        },
    )
