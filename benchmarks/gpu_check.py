"""CUDA training and GPU inference, checked on a GPU host: every on-policy algorithm trains on `cuda`, exports, and serves.

    python -m benchmarks.gpu_check [--iterations 4] [--devices cuda,cpu] [--result gpu_check]

For each algorithm the `Trainer` runs (TSCAC, RCPO, main-only and the MA cascade on
`rank`, SL-MGAC on `slot`), with its shipped config from `configs/` and a short
budget: train on each device, note where the parameters ended up, time the
iterations after the first (the first pays CUDA's start-up), export to ONNX and
check parity against onnxruntime (the serving contract: a policy trained on a GPU
must serve bit-for-bit like one trained on a CPU, within the export tolerance).
Then the serving backend opens one exported model with `cuda="auto"`: where
onnxruntime lists the CUDA provider it must come first.

The off-policy algorithms (DQN, DDPG, TD3, MaRCA, MA-RDPG) run their own replay loops on
one CPU process and ignore `run.device` (training/rl/offpolicy_runner.py says so);
they are not timed here. Nothing in `make test` needs a GPU: this is run by hand
on a lent GPU machine and its result committed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import Metric, write_result

REPO = Path(__file__).resolve().parents[1]
ON_POLICY = [("rank", "tscac"), ("rank", "rcpo"), ("rank", "main_only"), ("rank", "ma_cascade"), ("slot", "sl_mgac")]


def train_one(problem: str, algo: str, device: str, iterations: int, out: Path) -> dict[str, Any]:
    """Train `algo` on `device` for `iterations`; seconds per iteration after the first, parameters' device, parity."""
    from training.train import export_and_register, train_problem

    config = yaml.safe_load((REPO / "configs" / problem / f"{algo}.yaml").read_text())
    run = {**config.get("run", {}), "iterations": iterations, "device": device, "progress": False}
    run |= {"tensorboard": False, "plots": False, "out_dir": str(out / "run")}
    config["run"] = run
    t0 = time.perf_counter()
    result = train_problem(problem, algo, sim=True, config=config)
    total = time.perf_counter() - t0
    # Wall time at the end of iteration k, from the trainer's running rate: transitions so far / rate.
    per_iteration = run["n_envs"] * run["rollout_steps"]
    rates = [float(row["charts/transitions_per_s"]) for row in result.history]
    stamps = [(k + 1) * per_iteration / r for k, r in enumerate(rates) if r > 0]
    steady = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    param_device = str(next(result.learner.parameters()).device)
    export = export_and_register(result, problem, algo, out / "onnx", None, None)
    return {
        "seconds_total": total,
        "seconds_per_iteration": statistics.median(steady) if steady else total / iterations,
        "parameters_on": param_device,
        "parity": float(export["parity_max_abs_diff"]),
        "model": export["exported"].get("model.onnx") or next(iter(export["exported"].values())),
        "transitions_per_s": result.transitions / max(result.seconds, 1e-9),
    }


def serve_one(model_path: str) -> dict[str, Any]:
    """Open the exported model as serving does with cuda='auto' and score one batch."""
    import asyncio

    import numpy as np
    import onnxruntime as ort

    from serving.backends import OnnxRuntimeBackend

    available = ort.get_available_providers()
    outputs = [o.name for o in ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).get_outputs()]
    backend = OnnxRuntimeBackend(Path(model_path), outputs, cuda="auto")
    providers = backend.session.get_providers()
    size = backend.session.get_inputs()[0].shape[1]
    out = asyncio.run(backend.score({"observation": np.zeros((4, size), np.float32)}))
    ok = providers[0] == "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else True
    shapes = {name: list(value.shape) for name, value in out.items()}
    return {
        "model": Path(model_path).parent.parent.name,
        "available": available,
        "used": providers,
        "outputs": shapes,
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--devices", default="cuda,cpu")
    p.add_argument("--result", default="gpu_check")
    a = p.parse_args(argv)
    devices = [d for d in a.devices.split(",") if d]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check: torch sees no CUDA device on this host; run it on a GPU machine (or --devices cpu)"
        )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, GPU: {gpu}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    metrics: list[Metric] = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem, algo in ON_POLICY:
            for device in devices:
                key = f"{problem}.{algo}.{device}"
                try:
                    rows[key] = train_one(problem, algo, device, a.iterations, Path(tmp) / key)
                except Exception as err:  # a failure is the finding: record it and go on
                    rows[key] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
                print(key, {k: v for k, v in rows[key].items() if k != "trace"}, flush=True)
            cuda, cpu = rows.get(f"{problem}.{algo}.cuda", {}), rows.get(f"{problem}.{algo}.cpu", {})
            if "seconds_per_iteration" in cuda:
                metrics.append(
                    Metric(
                        f"train.{problem}.{algo}.cuda.seconds_per_iteration",
                        cuda["seconds_per_iteration"],
                        "s",
                        baseline=(f"train.{problem}.{algo}.cpu.seconds_per_iteration", cpu["seconds_per_iteration"])
                        if "seconds_per_iteration" in cpu
                        else None,
                        note=f"parameters on {cuda['parameters_on']}; export parity {cuda['parity']:.2g}; "
                        f"shipped config, {a.iterations} iterations",
                    )
                )
        first = next(
            (r for r in rows.values() if "model" in r and str(r.get("parameters_on", "")).startswith("cuda")), None
        )
        serving = serve_one(first["model"]) if first else {"error": "no model trained on cuda"}
    print("serving backend:", serving, flush=True)
    failures = sorted(k for k, r in rows.items() if "error" in r)
    metrics.append(
        Metric("gpu_check.training_failures", len(failures), "runs", goal=("<=", 0), note=", ".join(failures) or None)
    )
    for r in rows.values():
        r.pop("model", None)
    write_result(
        a.result,
        metrics,
        command="python -m benchmarks.gpu_check " + " ".join(argv or []),
        extra={"gpu": gpu, "torch": torch.__version__, "runs": rows, "serving_backend": serving},
    )


if __name__ == "__main__":
    main()
