"""Where MaRCA loses against the oracle on `allocate` (issue #16, "revenue lift vs the rule"): a diagnosis on one
tuning seed, nothing chosen from it.

    python -m benchmarks.allocate_diagnosis [--seed 10] [--intervals 768] [--updates 8] [--set FIELD=VALUE ...]
                                            [--name allocate_diagnosis]
    python -m benchmarks.allocate_diagnosis --ceiling-seeds 10,11,12 --name allocate_diagnosis_ceiling

    python -m benchmarks.allocate_diagnosis --ceiling-mpc 10,11,12,13,14,15,16,17,18,19 \
        --name allocate_diagnosis_ceiling_mpc

`--ceiling-mpc` (ours, a diagnostic for issue #16's lift as judged since 2026-12-05): can any learner reach 3 % over
the best rule held to the MPC's bound (u* 0.90, g 1.5) when MaRCA is served with the MPC? Per tuning day 1000 + s,
MaRCA's decision with the learned Q replaced by the exact E[revenue | s, a] (`TruthFeedback`, values at the forecast
traffic and the set point) and λ from the served MPC at serving/balancer.SERVED_SET_POINT, its load model fitted and
forecast warmed on its own history days and warm from the day before (allocate_quality's `mpc` arm exactly), over
that rule cold (as allocate_quality scored it until 2026-12-05; warm since, as `rule_warm` here); beside it the oracle (u* 0.88), the rule under the served MPC, the
exact values under the rule's own feedback λ, and the rule run warm (λ carried from the day before) to measure what
the cold start costs the rule. The answer rule, written before the run: the learned part can reach 3 % only if
`truth_mpc` over `rule` is ≥ 0.03 with `truth_mpc`'s over-utilisation ≤ 0.01; if its 95 % interval lies wholly
below 0.03, no learner deciding as MaRCA does under the served MPC reaches it on these days; in between, undecided.
If `rule_warm` earns more than `rule`, the reported lift flatters MaRCA by about that much (rule_warm over rule).

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
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import allocate_quality as Q
from benchmarks.allocate_lift import parse_overrides
from benchmarks.allocate_quality import ORACLE_TARGET, RULE_GAIN, RULE_TARGET
from benchmarks.common import Metric, write_result
from serving.balancer import SERVED_SET_POINT
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim

CACHE = Path("runs/allocate_diagnosis")
STAGES = {"retrieval": slice(0, 3), "pre_rank": slice(3, 4), "rank": slice(4, 6)}
"""Stage → components of the joint action (spec order), as MaRCA's agents own them."""


class _FeedbackArgmax:
    """argmax_a values(s, a) − λ_t·C(a)·contention(traffic) with the feedback λ at u* (or λ from `controller`,
    obs → λ once per interval, e.g. the served MPC) — the shared decision of the diagnostic policies below, which
    differ only in where the action values and the traffic come from."""

    def __init__(
        self,
        config: AllocateConfig,
        target: float,
        gain: float,
        controller: Callable[[np.ndarray], float] | None = None,
    ) -> None:
        self.config, self.target = config, target
        self.controller = M.FeedbackLambda(target, gain) if controller is None else controller
        self.cost = O.cost_table(config)
        self.lam = float("nan")

    def reset(self) -> None:
        O.reset_if_stateful(self.controller)

    def values_and_traffic(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        """(N, 384) action values and the traffic the cost's contention is read at."""
        raise NotImplementedError

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        lam = self.lam = self.controller(obs)
        values, traffic = self.values_and_traffic(obs)
        cost = self.cost * self.config.contention_factor(traffic)
        return O.ALL_ACTIONS[np.argmax(values - lam * cost[None, :], axis=1)]


class TruthFeedback(_FeedbackArgmax):
    """argmax_a E[revenue_i(a)] − λ_t·E[cost(a)], exact values at the forecast traffic and u*, feedback λ (or λ
    from `controller`: then u* is only the utilisation the values are read at)."""

    @functools.cached_property
    def forecaster(self) -> O.ReferencePlanner:
        """Only its traffic forecast is used."""
        return O.ReferencePlanner(self.config, self.target, traffic_grid_points=4)

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


CEILING_MPC_ARMS = ("rule", "rule_warm", "rule_mpc", "truth_rule", "truth_mpc", "oracle")
"""`--ceiling-mpc`'s arms (module docstring); lifts are over `rule` (cold, as allocate_quality scored it until
2026-12-05; its `rule` is `rule_warm` since)."""


def ceiling_mpc_day(seed: int, n: int = 256, target: float = SERVED_SET_POINT) -> dict[str, Any]:
    """Every `--ceiling-mpc` arm on day 1000 + seed; the MPC arms fit their load models on history days 500 + s and
    600 + s and warm on 999 + s exactly as allocate_quality's `mpc` arm (`controller_days`)."""
    config = AllocateConfig()
    day = 1000 + seed
    quality, cost = O.rule_quality_table(config), O.cost_table(config)
    out: dict[str, Any] = {"seed": seed}
    out["rule"] = Q.run_day(
        O.ValueCostRule(quality, cost, "feedback", Q.BEST_RULE_TARGET, gain=Q.BEST_RULE_GAIN), config, n, day
    )
    warm = Q.warm_rule(quality, cost, Q.BEST_RULE_TARGET, Q.BEST_RULE_GAIN)  # allocate_quality's `rule` since 12-05
    out["rule_warm"] = Q.run_warm_day(warm, config, n, day)
    rule_mpc = Q.controller_days(Q.rule_policy(config), config, n, seed, target, controllers=("mpc",), ceiling=False)
    out["rule_mpc"] = rule_mpc["mpc"]
    out["truth_rule"] = Q.run_day(TruthFeedback(config, Q.BEST_RULE_TARGET, Q.BEST_RULE_GAIN), config, n, day)

    def truth(controller: Callable[[np.ndarray], float]) -> TruthFeedback:
        # exact values read at the set point the MPC steers to (TruthFeedback reads them at the feedback's u*)
        return TruthFeedback(config, target, 0.0, controller)

    truth_mpc = Q.controller_days(truth, config, n, seed, target, controllers=("mpc",), ceiling=False)
    out["truth_mpc"], out["truth_mpc_share"] = truth_mpc["mpc"], truth_mpc["mpc_share"]
    out["oracle"] = Q.run_day(O.ReferencePlanner(config, ORACLE_TARGET), config, n, day)
    print(f"seed {seed}: " + ", ".join(f"{k} {out[k].revenue_per_day:.4f}" for k in CEILING_MPC_ARMS), flush=True)
    return out


def ceiling_mpc(seeds: list[int], name: str, command: str, n: int = 256) -> None:
    """`--ceiling-mpc` (module docstring): per tuning day every arm, lifts over the cold best rule, utilisation."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rows.append(ceiling_mpc_day(seed, n))
        write_ceiling_mpc(rows, seeds, name, command, n, time.perf_counter() - started)


def write_ceiling_mpc(
    rows: list[dict[str, Any]], seeds: list[int], name: str, command: str, n: int, seconds: float
) -> None:
    days = {k: [r[k] for r in rows] for k in CEILING_MPC_ARMS}
    done = [r["seed"] for r in rows]
    metrics: list[Metric] = []
    lifts: dict[str, tuple[float, Any]] = {}
    pairs = [(k, "rule") for k in CEILING_MPC_ARMS if k != "rule"]
    pairs += [("truth_mpc", "rule_warm"), ("truth_mpc", "rule_mpc"), ("oracle", "rule_warm")]
    for new, base in pairs:
        lift, ci = Q.paired(days[new], days[base])
        lifts[f"{new}_vs_{base}"] = (lift, ci)
        per_day = [a.revenue_per_day / b.revenue_per_day - 1.0 for a, b in zip(days[new], days[base], strict=True)]
        metrics.append(Metric(f"allocate.diagnosis.{new}.lift_vs_{base}", lift, "ratio", ci=ci,
                              note="per day: " + ", ".join(f"{x:+.4f}" for x in per_day)))  # fmt: skip
    arms: dict[str, dict[str, float]] = {}
    for arm in CEILING_MPC_ARMS:
        stats = {
            "revenue_per_request": [d.revenue_per_day for d in days[arm]],
            "utilisation": [Q.paper_utilisation(d.utilisation) for d in days[arm]],
            "over_utilisation": [Q.paper_over_utilisation(d.utilisation) for d in days[arm]],
            "share_over_budget": [float((d.utilisation > 1.0).mean()) for d in days[arm]],
            "mean_utilisation": [float(d.utilisation.mean()) for d in days[arm]],
        }
        arms[arm] = {}
        for key, values in stats.items():
            value, ci = Q.mean_ci(values)
            arms[arm][key] = value
            metrics.append(Metric(f"allocate.diagnosis.{arm}.{key}", value, "cents" if key.startswith("rev") else
                                  "budget", ci=ci))  # fmt: skip
    extra = {
        "seeds": seeds,
        "seeds_completed": done,
        "requests_per_interval": n,
        "set_point": SERVED_SET_POINT,
        "rule": [Q.BEST_RULE_TARGET, Q.BEST_RULE_GAIN],
        "oracle_target": ORACLE_TARGET,
        "arms": arms,
        "truth_mpc_share": [r["truth_mpc_share"] for r in rows],
        "seconds": seconds,
    }
    path = write_result(name, metrics, command=command, extra=extra)
    lines = [
        f"# allocate ceiling under the served MPC over the best rule — tuning days {[1000 + s for s in done]} "
        f"({len(done)} of {len(seeds)})",
        "",
        f"`{command}` ({n} requests per interval, {seconds:.0f} s)",
        "",
        CEILING_MPC_ARMS_TEXT.strip(),
        "",
        "| lift | mean | 95 % CI |",
        "|---|---|---|",
    ]
    for key, (lift, ci) in lifts.items():
        ci_text = f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] %" if ci else ""
        lines.append(f"| {key.replace('_vs_', ' over ')} | {100 * lift:+.2f} % | {ci_text} |")
    lines += [
        "",
        "| arm | revenue/request | utilisation min(u,1) | over-utilisation | share over budget | mean u |",
        "|---|---|---|---|---|---|",
    ]
    for arm, a in arms.items():
        lines.append(
            f"| {arm} | {a['revenue_per_request']:.4f} | {a['utilisation']:.4f} | {a['over_utilisation']:.4f} "
            f"| {100 * a['share_over_budget']:.1f} % | {a['mean_utilisation']:.4f} |"
        )
    lift, ci = lifts["truth_mpc_vs_rule"]
    warm, warm_ci = lifts["rule_warm_vs_rule"]
    lines += [
        "",
        "**Answer** (rule written before the run, module docstring): "
        + ceiling_mpc_verdict(lift, ci, arms["truth_mpc"]["over_utilisation"]),
        "",
        f"**Warm vs cold rule**: run warm, the rule earns {100 * warm:+.2f} %"
        + (f" [{100 * warm_ci[0]:+.2f}, {100 * warm_ci[1]:+.2f}]" if warm_ci else "")
        + f" more than cold, at over-utilisation {arms['rule_warm']['over_utilisation']:.4f} (cold "
        f"{arms['rule']['over_utilisation']:.4f}): a lift over the cold rule flatters MaRCA by about that much.",
    ]
    Path(path).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def ceiling_mpc_verdict(
    lift: float, ci: tuple[float, float] | None, over_utilisation: float, goal: float = 0.03
) -> str:
    """The `--ceiling-mpc` answer rule (module docstring): reachable only if the exact values under the served MPC
    reach the goal within the budget bound; out of reach if the whole interval lies below it; else undecided."""
    head = (
        f"`truth_mpc` over `rule` {100 * lift:+.2f} %"
        + (f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")
        + f", over-utilisation {over_utilisation:.4f}: "
    )
    if over_utilisation > 0.01:
        return head + "over the 0.01 bound, so not a fair ceiling; no verdict."
    if ci is not None and ci[1] < goal:
        return head + f"out of reach — no learner deciding as MaRCA does under the served MPC reaches {goal:.0%}."
    if lift >= goal:
        return head + f"reachable in principle — perfect action values under the served MPC give ≥ {goal:.0%}."
    return head + f"undecided — the mean is below {goal:.0%} but the interval reaches it; at best just at the goal."


CEILING_MPC_ARMS_TEXT = """
Arms (all on the same day, common random numbers; lifts over `rule`, paired per day, 95 % t-interval):
`rule` the best rule held to the MPC's bound (feedback λ, u* 0.90, g 1.5; cold: λ = 1 at the day's start, as
allocate_quality scored it until 2026-12-05); `rule_warm` the same rule warm (run through the day before, λ
carried; allocate_quality's `rule` since 2026-12-05);
`rule_mpc` the rule's v·Q̂(a) − λ·C(a) with λ from the served MPC (as allocate_quality's `rule_mpc`);
`truth_rule` MaRCA's decision with the exact E[revenue | s, a] under the rule's own feedback λ (u* 0.90, cold);
`truth_mpc` the same exact values with λ from the served MPC at the served set point (load model fitted and
forecast warmed on its own history days 500 + s, 600 + s, warm from day 999 + s: as the `mpc` arm) — the ceiling
of MaRCA's learned part under the served MPC; `oracle` the reference planner at u* 0.88.
"""


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
    p.add_argument("--requests", type=int, default=256, help="requests per interval (`--ceiling-mpc` only)")
    p.add_argument("--ceiling-mpc", default="", help="comma-separated tuning seeds: the `--ceiling-mpc` arms")
    p.add_argument("--name", default="allocate_diagnosis")
    args = p.parse_args(argv)
    command = ("python -m benchmarks.allocate_diagnosis " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    for flag, text in (("--ceiling-seeds", args.ceiling_seeds), ("--ceiling-mpc", args.ceiling_mpc)):
        seeds = [int(x) for x in text.split(",")] if text else []
        if any(0 <= x <= 4 for x in seeds):
            raise ValueError(f"{flag}: expected tuning seeds (not 0–4, the reported days), got {seeds}")
    if args.ceiling_seeds:
        ceiling([int(x) for x in args.ceiling_seeds.split(",")], args.name, command)
        return
    if args.ceiling_mpc:
        torch.set_num_threads(1)
        ceiling_mpc([int(x) for x in args.ceiling_mpc.split(",")], args.name, command, args.requests)
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
