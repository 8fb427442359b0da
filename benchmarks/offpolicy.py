"""Off-policy families on problems whose optimum is known exactly → benchmarks/results/offpolicy.json.

    python -m benchmarks.offpolicy [--seeds 0,1,2,3,4]
    # or seed subsets in parallel, then one result from their rows:
    python -m benchmarks.offpolicy --seeds 3,4 --partial /tmp/seeds34.json
    python -m benchmarks.offpolicy --combine benchmarks/results/offpolicy.json /tmp/seeds34.json

Three comparisons, each value and its baseline measured in the same run on the
same seeds (paired), medians over seeds, and a 95 % t-interval of the paired
difference (value − baseline) as `ci` on the `*_vs_*` metrics:

1. DQN gap to Q* on random tabular MDPs (6 states, 3 actions, γ = 0.9, one
   MDP per seed): `offpolicy.double_dqn.q_relative_error` = max|Q − Q*| / max|Q*|
   and `offpolicy.double_dqn.value_gap` = (mean V* − mean V^π) / mean V* of the
   greedy policy, evaluated exactly; baseline: DQN with the max target (Mnih 2015).
   Multi-discrete (2 × 3) MDPs: `offpolicy.dqn_per_head.value_gap` vs joint.
2. TD3 vs DDPG on a known optimum: the discounted scalar LQR (γ = 0.9, ρ = 1,
   optimum from the Riccati equation) — `offpolicy.td3.lqr_relative_regret`
   = (J* − J)/|J*| over 101 start states, baseline DDPG; and the quadratic
   bandit's mean |μ(s) − a*(s)|.
3. Recurrent vs feed-forward Q-learning on the memory task (2 cues, 6 steps):
   `offpolicy.recurrent_dqn.memory_success` (greedy success rate; the best
   feed-forward policy scores 1/2), baseline the feed-forward DQN.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Metric, write_result
from training.algorithms import ddpg, dqn
from training.rl.toy_mdps import MemoryEnv, QuadraticBanditEnv, ScalarLQREnv, TabularMDPEnv, random_mdp

T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def paired_ci(values: Sequence[float], baselines: Sequence[float]) -> tuple[float, float]:
    """95 % t-interval of the mean paired difference value − baseline."""
    diffs = [v - b for v, b in zip(values, baselines, strict=True)]
    if len(diffs) < 2:
        return (diffs[0], diffs[0])
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = T_975.get(len(diffs), 1.96) * sd / math.sqrt(len(diffs))
    return (mean - half, mean + half)


def tabular_dqn(seed: int, action_sizes: list[int], **overrides: object) -> tuple[float, float]:
    """(max|Q − Q*| / max|Q*|, relative value gap of the greedy policy) after training on one random MDP."""
    mdp = random_mdp(6, action_sizes, 0.9, seed=100 + seed)
    q_star = mdp.optimal_q()
    cfg = dqn.DQNConfig(
        gamma=0.9,
        total_env_steps=30_000,
        learning_starts=1_000,
        epsilon_decay_steps=10_000,
        epsilon_end=0.1,
        hidden_sizes=(64,),
        batch_size=128,
        learning_rate=1e-3,
        # Q converges like value iteration over target copies: the bias left is ≈ γ^copies
        # (0.9^75 ≈ 4e-4 here; with 19 copies it was 14 %).
        updates_per_step=2,
        target_update_period=50,
        huber_delta=None,
        seed=seed,
        **overrides,
    )  # type: ignore[arg-type]
    result = dqn.train(cfg, TabularMDPEnv(mdp, num_envs=16, horizon=30, seed=seed), action_sizes)
    loss = result.loss_module
    components = loss.greedy_action(torch.eye(mdp.num_states)).numpy()
    joint = np.zeros(mdp.num_states, dtype=np.int64)
    for i, size in enumerate(action_sizes):
        joint = joint * size + components[:, i]
    v_star = q_star.max(1)
    v_pi = mdp.policy_q(joint)[np.arange(mdp.num_states), joint]
    gap = float((v_star.mean() - v_pi.mean()) / v_star.mean())
    if cfg.action_mode == "joint":
        q = loss.q_network(torch.eye(mdp.num_states))[:, 0].detach().numpy()
        q_err = float(np.abs(q - q_star).max() / np.abs(q_star).max())
    else:
        q_err = float("nan")  # per-head Q-values are not the joint Q
    return q_err, gap


def lqr(seed: int, cfg: ddpg.DDPGConfig) -> float:
    env = ScalarLQREnv(dims=1, control_cost=1.0, gamma=0.9, num_envs=16, horizon=20, seed=seed)
    result = ddpg.train(cfg, env)
    starts = torch.linspace(-1, 1, 101).unsqueeze(1)
    best = env.discounted_return(env.optimal_action, starts).mean()
    got = env.discounted_return(result.loss_module.actor, starts).mean()
    return float((best - got) / best.abs())


def bandit(seed: int, cfg: ddpg.DDPGConfig) -> float:
    env = QuadraticBanditEnv(obs_size=3, action_size=2, num_envs=16, noise=0.1, seed=seed)
    result = ddpg.train(cfg, env)
    s = torch.rand(2000, 3, generator=torch.Generator().manual_seed(99)) * 2 - 1
    with torch.no_grad():
        return float((result.loss_module.actor(s) - env.optimal_action(s)).abs().mean())


def memory(seed: int, recurrent: bool) -> float:
    cfg = dqn.DQNConfig(
        gamma=0.9,
        recurrent=recurrent,
        total_env_steps=30_000,
        learning_starts=1_000,
        epsilon_decay_steps=10_000,
        hidden_sizes=(32,),
        recurrent_hidden_size=32,
        sequence_length=6,
        batch_size=32,
        learning_rate=3e-3,
        target_update_period=100,
        seed=seed,
    )
    result = dqn.train(cfg, MemoryEnv(2, 6, 16, seed=seed), [2])
    return dqn.greedy_success_rate(result.loss_module, MemoryEnv(2, 6, 16, seed=1000 + seed), episodes=1024)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (≥ 3)")
    parser.add_argument(
        "--partial", help="write only the per-seed rows to this JSON path (run seed subsets in parallel)"
    )
    parser.add_argument(
        "--combine", nargs="+", help="result or --partial files whose per-seed rows make the result (no training)"
    )
    args = parser.parse_args(argv)
    command = "python -m benchmarks.offpolicy " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()
    if args.combine:
        rows, seeds = combine_rows(args.combine)
        write(rows, seeds, command.strip(), time.monotonic() - started)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)  # tiny networks: one thread is fastest and stable under load
    rows = {}

    def record(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)
        print(f"[{time.monotonic() - started:7.1f}s] {key} = {value:.4f}", flush=True)

    lqr_steps = dict(total_env_steps=20_000, learning_starts=1_000, gamma=0.9, updates_per_step=2)
    bandit_steps = dict(total_env_steps=10_000, learning_starts=500, gamma=0.9, updates_per_step=2)
    for seed in seeds:
        q_err, gap = tabular_dqn(seed, [3], double_q=True)
        record("double_q_err", q_err)
        record("double_gap", gap)
        q_err, gap = tabular_dqn(seed, [3], double_q=False)
        record("plain_q_err", q_err)
        record("plain_gap", gap)
        record("joint_md_gap", tabular_dqn(seed, [2, 3])[1])
        record("per_head_md_gap", tabular_dqn(seed, [2, 3], action_mode="per_head")[1])
        record("td3_lqr", lqr(seed, ddpg.td3_config(seed=seed, **lqr_steps)))  # type: ignore[arg-type]
        record("ddpg_lqr", lqr(seed, ddpg.DDPGConfig(seed=seed, **lqr_steps)))  # type: ignore[arg-type]
        record("td3_bandit", bandit(seed, ddpg.td3_config(seed=seed, **bandit_steps)))  # type: ignore[arg-type]
        record("ddpg_bandit", bandit(seed, ddpg.DDPGConfig(seed=seed, **bandit_steps)))  # type: ignore[arg-type]
        record("recurrent_memory", memory(seed, recurrent=True))
        record("ff_memory", memory(seed, recurrent=False))

    if args.partial:
        Path(args.partial).write_text(json.dumps({"seeds": seeds, "per_seed": rows}, indent=2) + "\n")
        print(f"wrote {args.partial}")
        return
    write(rows, seeds, command.strip(), time.monotonic() - started)


def combine_rows(paths: Sequence[str]) -> tuple[dict[str, list[float]], list[int]]:
    """Per-seed rows of several runs, concatenated in file order; a seed may appear once only."""
    rows: dict[str, list[float]] = {}
    seeds: list[int] = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if set(doc["seeds"]) & set(seeds):
            raise ValueError(f"--combine: {path} repeats seeds {sorted(set(doc['seeds']) & set(seeds))}")
        seeds += doc["seeds"]
        for key, values in doc["per_seed"].items():
            rows.setdefault(key, []).extend(values)
    return rows, seeds


def write(rows: dict[str, list[float]], seeds: list[int], command: str, wall_s: float) -> None:
    med = {k: statistics.median(v) for k, v in rows.items()}
    n = len(seeds)
    note = f"median over {n} seeds; ci = 95% t-interval of the mean paired difference value − baseline"
    metrics = [
        Metric(
            "offpolicy.double_dqn.q_relative_error",
            med["double_q_err"],
            "fraction of max|Q*|",
            baseline=("offpolicy.dqn.q_relative_error", med["plain_q_err"]),
            ci=paired_ci(rows["double_q_err"], rows["plain_q_err"]),
            note=note,
        ),
        Metric(
            "offpolicy.double_dqn.value_gap",
            med["double_gap"],
            "fraction of mean V*",
            baseline=("offpolicy.dqn.value_gap", med["plain_gap"]),
            ci=paired_ci(rows["double_gap"], rows["plain_gap"]),
            note=note,
        ),
        Metric(
            "offpolicy.dqn_per_head.value_gap",
            med["per_head_md_gap"],
            "fraction of mean V*",
            baseline=("offpolicy.dqn_joint.value_gap", med["joint_md_gap"]),
            ci=paired_ci(rows["per_head_md_gap"], rows["joint_md_gap"]),
            note=note + "; multi-discrete 2×3 action; per-head cannot represent every joint Q",
        ),
        Metric(
            "offpolicy.td3.lqr_relative_regret",
            med["td3_lqr"],
            "fraction of |J*|",
            baseline=("offpolicy.ddpg.lqr_relative_regret", med["ddpg_lqr"]),
            ci=paired_ci(rows["td3_lqr"], rows["ddpg_lqr"]),
            note=note,
        ),
        Metric(
            "offpolicy.td3.bandit_action_error",
            med["td3_bandit"],
            "mean |mu(s) - a*(s)|",
            baseline=("offpolicy.ddpg.bandit_action_error", med["ddpg_bandit"]),
            ci=paired_ci(rows["td3_bandit"], rows["ddpg_bandit"]),
            note=note,
        ),
        Metric(
            "offpolicy.recurrent_dqn.memory_success",
            med["recurrent_memory"],
            "success rate",
            baseline=("offpolicy.feed_forward_dqn.memory_success", med["ff_memory"]),
            ci=paired_ci(rows["recurrent_memory"], rows["ff_memory"]),
            note=note + "; best feed-forward policy: 0.5",
        ),
    ]
    path = write_result(
        "offpolicy", metrics, command=command, extra={"per_seed": rows, "seeds": seeds, "wall_s": wall_s}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
