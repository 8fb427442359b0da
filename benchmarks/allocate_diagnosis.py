"""Where MaRCA loses against the oracle on `allocate` (issue #16, "revenue lift vs the rule"): a diagnosis on one
tuning seed, nothing chosen from it.

    python -m benchmarks.allocate_diagnosis [--seed 10] [--intervals 768] [--updates 8] [--set FIELD=VALUE ...]
                                            [--name allocate_diagnosis]
    python -m benchmarks.allocate_diagnosis --ceiling-seeds 10,11,12 --name allocate_diagnosis_ceiling

`--ceiling-seeds`: only the untrained policies (rule, truth_feedback, both oracles) on days 1000 + s, each one's
revenue lift over the rule per day: what perfect action values could add to the rule under the rule's own
feedback λ, and what the oracle's foresight and u* add on top (seconds per day).

Evaluation day 1000 + seed (tuning seeds 10–12 → days 1010–1012; never the reported days 1000–1004). The same day
(common random numbers) is run by five policies, so the gap between the rule and the oracle splits into steps:

* `rule`: the best one-parameter rule, argmax v·Q̂(a) − λ·C(a), feedback λ (u* = RULE_TARGET);
* `marca`: MaRCA trained `--intervals` × `--updates` (seed `--seed`), the same feedback λ;
* `marca_joint_argmax`: the same learned Q_tot, the exact joint argmax over the 384 actions instead of the
  per-agent factorised decision (the same λ controller): what the factorisation costs;
* `truth_feedback`: MaRCA's decision rule with the learned Q replaced by the simulator's exact E[revenue | s, a]
  (at the forecast traffic and at u*) and the same feedback λ — what perfect action values would earn
  with MaRCA's controller;
* `oracle_rule_target`: the reference planner (exact values, foresight of the traffic curve) at the rule's u*;
* `oracle`: the reference planner at its own u* (ORACLE_TARGET), the benchmark's 100 %.

Then, on the requests MaRCA and the rule actually saw, the **allocation loss at equal compute**: per interval,
the exact E[revenue] of the policy's actions against the most any allocation of the *same* expected compute to
the same requests can earn (argmax_a E[rev_i(a)] − μ·E[cost(a)], μ found by bisection so the total cost
matches), both at the interval's realised traffic and utilisation. Per request the loss is
regret_i = [E rev_i(a*) − μ·E cost(a*)] − [E rev_i(a_i) − μ·E cost(a_i)] ≥ 0; it sums to the interval's gap, so
it splits by request-value decile and by stage (the gain of re-choosing one agent's part alone, the others
kept). Last, `near_top_fit`: how the learned Q_tot orders each request's best actions. Ours: a diagnostic, not a
result the issue asks for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.allocate_lift import parse_overrides
from benchmarks.allocate_quality import ORACLE_TARGET, RULE_GAIN, RULE_TARGET
from benchmarks.common import Metric, write_result
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim

CACHE = Path("runs/allocate_diagnosis")
STAGES = {"retrieval": slice(0, 3), "pre_rank": slice(3, 4), "rank": slice(4, 6)}
"""Stage → components of the joint action (spec order), as MaRCA's agents own them."""


class _FeedbackArgmax:
    """argmax_a values(s, a) − λ_t·C(a)·contention(traffic) with the feedback λ at u* — the shared decision of the
    two diagnostic policies below, which differ only in where the action values and the traffic come from."""

    def __init__(self, config: AllocateConfig, target: float, gain: float) -> None:
        self.config = config
        self.controller = M.FeedbackLambda(target, gain)
        self.cost = O.cost_table(config)
        self.lam = float("nan")

    def reset(self) -> None:
        self.controller.reset()

    def values_and_traffic(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        """(N, 384) action values and the traffic the cost's contention is read at."""
        raise NotImplementedError

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        lam = self.lam = self.controller(obs)
        values, traffic = self.values_and_traffic(obs)
        cost = self.cost * self.config.contention_factor(traffic)
        return O.ALL_ACTIONS[np.argmax(values - lam * cost[None, :], axis=1)]


class TruthFeedback(_FeedbackArgmax):
    """argmax_a E[revenue_i(a)] − λ_t·E[cost(a)], exact values at the forecast traffic and u*, feedback λ."""

    def __init__(self, config: AllocateConfig, target: float, gain: float) -> None:
        super().__init__(config, target, gain)
        self.target = target
        self.forecaster = O.ReferencePlanner(config, target, traffic_grid_points=4)  # only its traffic forecast

    def values_and_traffic(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        _, traffic = self.forecaster.forecast_traffic(obs)
        return O.expected_revenue(self.config, O.Requests.from_observation(obs), traffic, self.target), traffic


class JointArgmax(_FeedbackArgmax):
    """MaRCA's learned Q_tot with the exact joint argmax over the 384 actions (no per-agent factorisation):
    argmax_a Q_tot(s, a) − λ_t·C(a)·contention(last load), the same feedback λ."""

    def __init__(self, learner: M.MarcaLearner, config: AllocateConfig, target: float, gain: float) -> None:
        super().__init__(config, target, gain)
        self.learner = learner

    def values_and_traffic(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        values = self.learner.joint_action_values(torch.as_tensor(np.asarray(obs, np.float32))).numpy()
        return values, float(obs[0, 1])


def record_day(policy: Any, config: AllocateConfig, n: int, day: int) -> dict[str, Any]:
    """Run one day; keep per interval the observations, joint actions, λ, traffic, utilisation, revenue."""
    sim = BatchedAllocateSim(n, config, day, autoreset=False)
    obs = sim.reset(day)
    policy.reset()
    rows: dict[str, list[Any]] = {k: [] for k in ("obs", "actions", "lam", "traffic", "utilisation", "revenue")}
    while True:
        actions = policy(obs)
        next_obs, rewards, done, info = sim.step(actions)
        for key, val in (
            ("obs", obs),
            ("actions", actions),
            ("lam", float(getattr(policy, "lam", np.nan))),
            ("traffic", info["load"]),
            ("utilisation", info["utilisation"]),
            ("revenue", float(rewards["revenue"].mean())),
        ):
            rows[key].append(val)
        obs = next_obs
        if done.all():
            break
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["revenue_per_day"] = float((out["revenue"] * out["traffic"]).sum() / out["traffic"].sum())
    return out


def equal_compute_regret(config: AllocateConfig, day: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per request (intervals × N): value, regret at equal compute, the policy's and the best allocation's
    expected cost, and per stage the gain of re-choosing that stage alone (module docstring)."""
    base = O.cost_table(config)
    action_index = {tuple(a): i for i, a in enumerate(O.ALL_ACTIONS.tolist())}
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("value", "regret", "cost", "best_cost", "revenue", "gap")}
    for stage in STAGES:
        out[f"stage_{stage}"] = []
    for obs, actions, traffic, util in zip(day["obs"], day["actions"], day["traffic"], day["utilisation"], strict=True):
        requests = O.Requests.from_observation(obs)
        revenue = O.expected_revenue(config, requests, float(traffic), float(util))  # (N, 384)
        cost = base * config.contention_factor(float(traffic))
        chosen = np.asarray([action_index[tuple(a)] for a in actions.tolist()])
        rows = np.arange(len(chosen))
        budget = cost[chosen].sum()
        low, high = 0.0, 1.0
        while cost[np.argmax(revenue - high * cost[None, :], axis=1)].sum() > budget and high < 1e6:
            low, high = high, high * 4.0
        for _ in range(40):  # μ: the best allocation that spends exactly (to bisection precision) the same compute
            mid = 0.5 * (low + high)
            if cost[np.argmax(revenue - mid * cost[None, :], axis=1)].sum() > budget:
                low = mid
            else:
                high = mid
        mu = high
        objective = revenue - mu * cost[None, :]
        best = np.argmax(objective, axis=1)
        regret = objective[rows, best] - objective[rows, chosen]
        out["value"].append(requests.value)
        out["regret"].append(regret)
        out["cost"].append(cost[chosen])
        out["best_cost"].append(cost[best])
        out["revenue"].append(revenue[rows, chosen])
        out["gap"].append(np.full(len(chosen), revenue[rows, best].sum() - revenue[rows, chosen].sum()))
        for stage, comps in STAGES.items():
            # the best objective over actions that agree with the policy's choice outside this stage
            keep = [c for c in range(O.ALL_ACTIONS.shape[1]) if c not in range(comps.start, comps.stop)]
            same_rest = (O.ALL_ACTIONS[None, :, keep] == actions[:, None, keep]).all(axis=2)  # (N, 384)
            local = np.where(same_rest, objective, -np.inf).max(axis=1)
            out[f"stage_{stage}"].append(local - objective[rows, chosen])
    return {k: np.concatenate(v) for k, v in out.items()}


def near_top_fit(
    learner: M.MarcaLearner, config: AllocateConfig, day: dict[str, Any], top: int = 30, every: int = 4
) -> list[dict[str, float]]:
    """How well the learned Q_tot orders the actions that matter: per request (every `every`-th interval of
    `day`), among its `top` truly best joint actions, the least-squares slope and the correlation of learned on
    exact E[revenue] (at the interval's realised traffic and utilisation); medians per request-value decile.
    A low correlation means noise. `cost_tilt`: the slope, over the same actions, of the learned value's error
    (learned − exact, per unit of request value) on the action's expected cost: > 0 means the learner prices
    extra compute too high for this request (it over-spends), < 0 too low (it under-spends)."""
    cost_table = O.cost_table(config)
    rows = []
    for t in range(0, len(day["obs"]), every):
        obs = day["obs"][t]
        requests = O.Requests.from_observation(obs)
        truth = O.expected_revenue(config, requests, float(day["traffic"][t]), float(day["utilisation"][t]))
        learned = learner.joint_action_values(torch.as_tensor(np.asarray(obs, np.float32))).numpy()
        cost = cost_table * config.contention_factor(float(day["traffic"][t]))
        for i in range(obs.shape[0]):
            best = np.argsort(truth[i])[-top:]
            x, y, c = truth[i, best], learned[i, best], cost[best]
            error = (y - x) / requests.value[i]
            rows.append(
                (
                    requests.value[i],
                    np.cov(x, y)[0, 1] / np.var(x, ddof=1),
                    np.corrcoef(x, y)[0, 1],
                    np.cov(c, error)[0, 1] / max(np.var(c, ddof=1), 1e-12),
                )
            )
    r = np.asarray(rows)
    deciles = np.searchsorted(np.quantile(r[:, 0], np.linspace(0, 1, 11)[1:-1]), r[:, 0], side="right")
    return [
        {
            "decile": float(d + 1),
            "slope": float(np.median(r[deciles == d, 1])),
            "correlation": float(np.median(r[deciles == d, 2])),
            "cost_tilt": float(np.median(r[deciles == d, 3])),
        }
        for d in range(10)
    ]


def by_decile(cells: dict[str, np.ndarray], deciles: np.ndarray) -> list[dict[str, float]]:
    """Per request-value decile: share of the total regret, regret per unit of revenue, compute vs best."""
    total = cells["regret"].sum()
    rows = []
    for d in range(10):
        m = deciles == d
        row = {
            "decile": float(d + 1),
            "value_mean": float(cells["value"][m].mean()),
            "regret_share": float(cells["regret"][m].sum() / total),
            "regret_over_revenue": float(cells["regret"][m].sum() / cells["revenue"][m].sum()),
            "cost": float(cells["cost"][m].mean()),
            "best_cost": float(cells["best_cost"][m].mean()),
        }
        for stage in STAGES:
            row[f"stage_{stage}_share"] = float(cells[f"stage_{stage}"][m].sum() / total)
        rows.append(row)
    return rows


def untrained_policies(config: AllocateConfig) -> dict[str, Any]:
    return {
        "rule": O.ValueCostRule(
            O.rule_quality_table(config), O.cost_table(config), "feedback", RULE_TARGET, gain=RULE_GAIN
        ),
        "truth_feedback": TruthFeedback(config, RULE_TARGET, RULE_GAIN),
        "oracle_rule_target": O.ReferencePlanner(config, RULE_TARGET),
        "oracle": O.ReferencePlanner(config, ORACLE_TARGET),
    }


def ceiling(seeds: list[int], name: str, command: str) -> None:
    """Per tuning day, each untrained policy's lift over the rule (module docstring, `--ceiling-seeds`)."""
    config = AllocateConfig()
    revenue: dict[str, list[float]] = {}
    for seed in seeds:
        for policy_name, policy in untrained_policies(config).items():
            revenue.setdefault(policy_name, []).append(record_day(policy, config, 256, 1000 + seed)["revenue_per_day"])
    rule = np.asarray(revenue["rule"])
    lifts = {k: (np.asarray(v) / rule - 1.0).tolist() for k, v in revenue.items() if k != "rule"}
    metrics = [
        Metric(f"allocate.diagnosis.{k}.lift_vs_rule", float(np.mean(v)), "ratio", note="per day: " + str(v))
        for k, v in lifts.items()
    ]
    path = write_result(name, metrics, command=command, extra={"seeds": seeds, "revenue": revenue, "lifts": lifts})
    lines = [f"# allocate ceiling over the rule — days {[1000 + s for s in seeds]}", "", f"`{command}`", ""]
    lines += [
        f"- {k}: mean {100 * np.mean(v):+.2f} %, per day " + ", ".join(f"{100 * x:+.2f} %" for x in v)
        for k, v in lifts.items()
    ]
    Path(path).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def trained_learner(
    seed: int, intervals: int, updates: int, config: AllocateConfig, overrides: dict[str, Any] | None = None
) -> M.MarcaLearner:
    """MaRCA exactly as benchmarks/allocate_lift.py trains it (with its `--set` overrides), cached under
    runs/allocate_diagnosis/."""
    overrides = overrides or {}
    cfg = M.MarcaConfig(seed=seed, train_intervals=intervals, updates_per_interval=updates, **overrides)
    tag = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    path = CACHE / f"marca_s{seed}_i{intervals}_u{updates}_t{cfg.utilisation_target}{tag}.pt"
    learner = M.VARIANTS["marca"](cfg)
    if path.exists():
        learner.load_state_dict(torch.load(path))
        learner.eval()
        return learner
    learner = M.train(cfg, "marca", config).learner
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(learner.state_dict(), path)
    return learner


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seed", type=int, default=10, help="a tuning seed (evaluation day 1000 + seed)")
    p.add_argument("--intervals", type=int, default=768)
    p.add_argument("--updates", type=int, default=8)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="as allocate_lift's --set")
    p.add_argument("--ceiling-seeds", default="", help="comma-separated tuning seeds: only the untrained policies")
    p.add_argument("--name", default="allocate_diagnosis")
    args = p.parse_args(argv)
    command = ("python -m benchmarks.allocate_diagnosis " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    if args.ceiling_seeds:
        seeds = [int(x) for x in args.ceiling_seeds.split(",")]
        if any(0 <= x <= 4 for x in seeds):
            raise ValueError(f"--ceiling-seeds: expected tuning seeds (not 0–4, the reported days), got {seeds}")
        ceiling(seeds, args.name, command)
        return
    if 0 <= args.seed <= 4:
        raise ValueError(f"--seed: expected a tuning seed (not 0–4, the reported days), got {args.seed}")
    torch.set_num_threads(1)
    config = AllocateConfig()
    day = 1000 + args.seed
    started = time.perf_counter()
    overrides = parse_overrides(args.set)
    learner = trained_learner(args.seed, args.intervals, args.updates, config, overrides)
    cost = M.CostTable.from_simulator(config, learner.split)
    policies = untrained_policies(config)
    policies = {
        "rule": policies.pop("rule"),
        "marca": M.MarcaPolicy(learner, cost, M.FeedbackLambda(RULE_TARGET, RULE_GAIN)),
        "marca_joint_argmax": JointArgmax(learner, config, RULE_TARGET, RULE_GAIN),
        **policies,
    }
    days = {name: record_day(policy, config, 256, day) for name, policy in policies.items()}
    oracle = days["oracle"]["revenue_per_day"]
    summary = {
        name: {
            "revenue_per_request": d["revenue_per_day"],
            "return_vs_oracle": d["revenue_per_day"] / oracle,
            "mean_utilisation": float(d["utilisation"].mean()),
            "share_over_budget": float((d["utilisation"] > 1.0).mean()),
        }
        for name, d in days.items()
    }
    regret: dict[str, Any] = {}
    for name in ("marca", "marca_joint_argmax", "rule", "truth_feedback"):
        cells = equal_compute_regret(config, days[name])
        edges = np.quantile(cells["value"], np.linspace(0, 1, 11)[1:-1])
        deciles = np.searchsorted(edges, cells["value"], side="right")
        gap = cells["regret"].sum() / cells["revenue"].sum()
        regret[name] = {
            "equal_compute_gap": float(gap),
            "stage_shares": {s: float(cells[f"stage_{s}"].sum() / cells["regret"].sum()) for s in STAGES},
            "share_of_requests_with_regret": float((cells["regret"] > 1e-9).mean()),
            "deciles": by_decile(cells, deciles),
        }
    fit = near_top_fit(learner, config, days["marca"])
    metrics = [
        Metric(f"allocate.diagnosis.{name}.return_vs_oracle", s["return_vs_oracle"], "ratio")
        for name, s in summary.items()
    ] + [
        Metric(f"allocate.diagnosis.{name}.equal_compute_gap", r["equal_compute_gap"], "ratio")
        for name, r in regret.items()
    ]
    extra = {
        "seed": args.seed,
        "day": day,
        "train_intervals": args.intervals,
        "updates_per_interval": args.updates,
        "overrides": overrides,
        "policies": summary,
        "equal_compute": regret,
        "near_top_fit": fit,
        "seconds": time.perf_counter() - started,
    }
    path = write_result(args.name, metrics, command=command, extra=extra)
    lines = [
        f"# allocate diagnosis — seed {args.seed} (day {day}), MaRCA {args.intervals} × {args.updates} {overrides or ''}",
        "",
        f"`{command}`",
        "",
        "| policy | revenue/request | vs oracle | mean u | share over |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['revenue_per_request']:.4f} | {100 * s['return_vs_oracle']:.2f} % "
            f"| {s['mean_utilisation']:.3f} | {100 * s['share_over_budget']:.1f} % |"
        )
    for name, r in regret.items():
        stage_text = ", ".join(f"{s} {100 * v:.0f} %" for s, v in r["stage_shares"].items())
        lines += [
            "",
            f"## {name}: loss at equal compute {100 * r['equal_compute_gap']:.2f} % of its revenue",
            f"re-choosing one stage alone recovers: {stage_text}; requests with regret "
            f"{100 * r['share_of_requests_with_regret']:.0f} %",
            "",
            "| value decile | mean v | share of loss | loss / revenue | cost | best cost | retrieval | pre_rank | rank |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in r["deciles"]:
            lines.append(
                f"| {row['decile']:.0f} | {row['value_mean']:.2f} | {100 * row['regret_share']:.1f} % "
                f"| {100 * row['regret_over_revenue']:.2f} % | {row['cost']:.3f} | {row['best_cost']:.3f} "
                f"| {100 * row['stage_retrieval_share']:.1f} % | {100 * row['stage_pre_rank_share']:.1f} % "
                f"| {100 * row['stage_rank_share']:.1f} % |"
            )
    lines += [
        "",
        "## MaRCA's Q_tot among each request's 30 truly best actions (learned on exact, medians per value decile)",
        "",
        "| value decile | " + " | ".join(f"{row['decile']:.0f}" for row in fit) + " |",
        "|---|" + "---|" * len(fit),
        "| slope | " + " | ".join(f"{row['slope']:.3f}" for row in fit) + " |",
        "| correlation | " + " | ".join(f"{row['correlation']:.3f}" for row in fit) + " |",
        "| cost tilt (per unit v) | " + " | ".join(f"{row['cost_tilt']:+.3f}" for row in fit) + " |",
    ]
    Path(path).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
