"""Training throughput of `rank` TSCAC in the batched simulator (issue 5): transitions/s, CPU (and GPU when present).

`train.rank.transitions_per_s` = transitions collected *and* learned from per
second of wall time (collection + critic/actor updates), median of repeats.
Baseline, same run: `sim.rank.collect_transitions_per_s` — the same collection
with the same actor and no learning, so the ratio shows what learning costs.

    python -m benchmarks.train_throughput [--iterations 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import Metric, median, write_result


def _train_rate(device: str, iterations: int, seed: int) -> float:
    from training.train import train_problem

    run = {
        "seed": seed,
        "iterations": iterations,
        "n_envs": 256,
        "rollout_steps": 16,
        "progress": False,
        "tensorboard": False,
        "device": device,
        "out_dir": f"var/bench/train_throughput/{device}",
    }
    res = train_problem("rank", "tscac", sim=True, config={"run": run, "algo": {"minibatch_size": 1024, "epochs": 2}})
    return res.transitions / res.seconds


def _collect_rate(iterations: int, seed: int) -> float:
    from models.problems import RANK
    from training.algorithms.tscac import TSCACConfig, TSCACLoss
    from training.rl.data import RolloutCollector
    from training.rl.exploration import PerStepNoise, make_act
    from training.rl.sim import BatchedSimPool
    from training.rl.task import TaskSpec

    torch.set_num_threads(1)
    task = TaskSpec.from_problem(RANK)
    act = make_act(TSCACLoss(task, TSCACConfig(), RANK.default_action).actor, PerStepNoise())
    collector = RolloutCollector(BatchedSimPool("rank", 256, task), seed)
    t = time.perf_counter()
    for _ in range(iterations):
        collector.collect(act, 16)
    return collector.transitions / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    collect = median([_collect_rate(a.iterations, s) for s in range(a.repeats)])
    cpu = median([_train_rate("cpu", a.iterations, s) for s in range(a.repeats)])
    metrics = [
        Metric(
            "train.rank.transitions_per_s",
            cpu,
            "transitions/s",
            baseline=("sim.rank.collect_transitions_per_s", collect),
            note="TSCAC online, 256 users × 16 steps per iteration, 2 epochs of 1024-row minibatches, CPU, 1 torch thread",
        )
    ]
    if torch.cuda.is_available():
        gpu = median([_train_rate("cuda", a.iterations, s) for s in range(a.repeats)])
        metrics.append(
            Metric(
                "train.rank.cuda.transitions_per_s",
                gpu,
                "transitions/s",
                baseline=("train.rank.transitions_per_s", cpu),
            )
        )
    write_result("train_throughput", metrics, command="python -m benchmarks.train_throughput " + " ".join(argv or []))
    for m in metrics:
        print(m.to_json())


if __name__ == "__main__":
    main()
