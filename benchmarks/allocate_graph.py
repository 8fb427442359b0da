"""MaRCA's serving graph: the folded export (marca_export.FoldedServingScores) vs the un-folded one, same run.

    python -m benchmarks.allocate_graph [--calls 2000] [--repeats 7]

Both graphs are exported from one learner (MarcaConfig's serving sizes, seed 0, reward_scale 0.05; timing and
node counts do not depend on the weights' values, so it is not trained). Reported:
* `allocate.graph.nodes` — ONNX nodes of the folded graph, baseline the un-folded graph's;
* `allocate.graph.us_per_call_batch1` — onnxruntime CPUExecutionProvider, one thread, batch 1: median over
  `--repeats` blocks of `--calls` calls (the two graphs alternate block by block, so host drift hits both);
* `allocate.graph.parity_max_rel_diff` — max |folded − un-folded| / max |score| over 1,000 random states, and
  `allocate.graph.parity_action_agreement` — share of (state, λ) with the same per-agent argmax of S − λ·C
  (C the simulator's cost table, λ ∈ {0, 0.5, 2}).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.common import Metric, write_result
from training.algorithms import marca as M
from training.algorithms import marca_export as X
from training.envs.allocate import AllocateConfig


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def states(n: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, M.OBS_SIZE, generator=gen)
    obs[:, M._VALUE] = torch.log1p(torch.rand(n, generator=gen) * 1000.0) / 5.0  # request value 0 … 1000 cents
    return obs.numpy()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    learner = M.VARIANTS["marca"](M.MarcaConfig())
    learner.reward_scale.fill_(0.05)
    learner.eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.onnx" for name in ("folded", "unfolded")}
        for name, path in paths.items():
            X.export_serving_graph(learner, path, folded=name == "folded")
        nodes = {name: len(onnx.load(str(path)).graph.node) for name, path in paths.items()}
        sessions = {name: session(path) for name, path in paths.items()}
    obs = states(1000, 1)
    scores = {name: s.run([X.OUTPUT], {"observation": obs})[0] for name, s in sessions.items()}
    rel = float(np.abs(scores["folded"] - scores["unfolded"]).max() / np.abs(scores["unfolded"]).max())
    costs = np.concatenate(M.CostTable.from_simulator(AllocateConfig(), learner.split).per_agent)
    sizes = learner.split.num_actions
    agree, total = 0, 0
    for lam in (0.0, 0.5, 2.0):
        acts = {}
        for name, s in scores.items():
            adjusted = s - lam * costs[None, :]
            parts = np.split(adjusted, np.cumsum(sizes)[:-1], axis=1)
            acts[name] = np.stack([part.argmax(axis=1) for part in parts], axis=1)
        agree += int((acts["folded"] == acts["unfolded"]).all(axis=1).sum())
        total += obs.shape[0]
    one = obs[:1]
    for s in sessions.values():  # warm-up
        for _ in range(200):
            s.run([X.OUTPUT], {"observation": one})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeats):
        for name, s in sessions.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                s.run([X.OUTPUT], {"observation": one})
            times[name].append(1e6 * (time.perf_counter() - started) / args.calls)
    us = {name: float(np.median(t)) for name, t in times.items()}
    metrics = [
        Metric(
            "allocate.graph.nodes",
            float(nodes["folded"]),
            "nodes",
            baseline=("allocate.graph.unfolded.nodes", float(nodes["unfolded"])),
        ),
        Metric(
            "allocate.graph.us_per_call_batch1",
            us["folded"],
            "µs",
            baseline=("allocate.graph.unfolded.us_per_call_batch1", us["unfolded"]),
            note=f"median of {args.repeats} blocks × {args.calls} calls, onnxruntime CPU, 1 thread",
        ),
        Metric("allocate.graph.parity_max_rel_diff", rel, "ratio", goal=("<=", 1e-5)),
        Metric("allocate.graph.parity_action_agreement", agree / total, "share", goal=(">=", 1.0)),
    ]
    command = ("python -m benchmarks.allocate_graph " + " ".join(argv or [])).strip()
    path = write_result("allocate_graph", metrics, command=command, extra={"blocks_us": times})
    for m in metrics:
        print(m.to_json())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
