"""MaRCA on `allocate` (issue #16's check): revenue vs static and the best rule, Return % and Spearman of the
AWRQ-Mixer and its QMIX/VDN/DQN baselines against the oracle, and the MPC balancer vs feedback.

Per seed s (paired: every policy sees the same evaluation day, common random numbers):
* each variant (marca, qmix, vdn, dqn) of training/algorithms/marca.py is trained online in the simulator
  (seed s, `--intervals` intervals) and evaluated on day 1000 + s with the feedback λ controller of
  headroom_allocate's best one-parameter rule (u* = 0.85, g = 1.5: benchmarks/results/headroom_allocate.json's
  winner, searched on days 3000–3007 with at most 0.5 % of intervals over budget; 0.82 while it was searched on
  1000–1007, which hold this benchmark's reported days), so the learned policies and that rule
  (`rule_same_controller`) run at the same compute target;
* the best static allocation, the rules (feedback λ over v·Q̂(a) − λ·C(a), allocate_oracle.py) and the oracle:
  the reference planner (exact expectations, foresight of the traffic curve, u* = 0.88). The rules: `rule`, the
  best rule held to the MPC's bound (u* = 0.90, g = 1.5: benchmarks/allocate_rule_search.py, the most revenue on
  days 3000–3007 with the paper's over-utilisation ≤ 0.01); `rule_same_controller`, headroom_allocate's (above);
  `rule_mpc`, the rule's decision with λ from the served MPC (below) at the set point, its load model fitted and
  its forecast warmed on the rule's own history days 500 + s and 600 + s. `rule` runs WARM (ours, the lead's
  decision of 2026-12-05, a fairness correction): through day 999 + s first with its λ carried
  (`WarmFeedbackLambda`), as the MPC arms run and as a served rule would, and it was searched warm; on tuning days
  1010–1019 warm earned +0.20 % over cold (results/allocate_diagnosis_ceiling_mpc.md). Until then it ran cold
  (λ = 1 at the day's start): results/allocate_quality_cold_rule.*. `rule_same_controller` (and the agents under
  its λ) stay cold, as in headroom_allocate's search: the old same-controller comparison, kept for continuity;
* Return % = revenue / the oracle's revenue on the same day; Spearman = per request, the rank correlation
  of the learned Q_tot(s, a) over the 384 joint actions with the oracle's exact E[revenue | s, a] at the
  interval's realised traffic and utilisation (every 8th interval, 64 requests), averaged;
* MPC vs feedback (serving/balancer.py): MaRCA's agents with λ from `MPCBalancer` on the `CurveLoadModel`
  (fitted on two simulated history days run under a λ-perturbed feedback controller; the traffic forecast —
  diurnal profile × level × the AR(1) carry of the last deviation with φ̂ fitted, serving/balancer.py since
  2026-12-05 — warmed on them; the hour terms read the coming slot) or from `FeedbackBalancer` (the PI fallback), all
  aiming at the set point `--target` (default serving/balancer.SERVED_SET_POINT = 0.98 of budget, chosen on
  tuning seeds 10–12 by benchmarks/allocate_setpoint.py: the issue's goal, a mean of min(u, 1) ≥ 0.95, needs
  a set point above 0.95). `mpc` is the served MPC (its plan starts from an observer's
  estimate and it carries offset-free integral action: serving/balancer.py SERVED_*), `mpc_paper` the
  paper's plain MPC on the same model. Each controller is warm, as in serving: it runs through day
  999 + s first and carries its state into the scored day (until 2026-12-04 each started cold at λ = 1).
  Metrics with the paper's definitions (from the authors' published evaluation code): utilisation =
  mean over intervals of min(u, 1); over-utilisation = mean over intervals of max(u − 1, 0), with u =
  compute used / budget. Beside them (ours): the share of intervals over budget and the plain mean of u, and the
  MPC's one-step surprise (utilisation − its plan's prediction) with its traffic-forecast and load-model parts
  (`surprise_parts`).
  The ceiling: MaRCA's agents at λ = 0 (the most compute they choose to spend), mean of min(u, 1) — the
  paper's utilisation no λ ≥ 0 can exceed (until 2026-12-05 it was capped at the target, not at 1).

The lift over the rule (ours, the lead's decision of 2026-12-05; docs/marca.md "How the lift over the rule is
judged"): issue #16's MaRCA is the whole system — agents, cost model, MPC balancer — so
`allocate.marca.revenue_lift_vs_rule` is MaRCA as served (the `mpc` arm) over `rule`, the best rule held to the same
budget bound (over-utilisation ≤ 0.01, the bound the served set point was chosen under). It counts as met only if
MaRCA-as-served's over-utilisation on the reported days is ≤ 0.01 too (`verdict`, the line under the table). Beside
it, so the source of the lift stays visible: `revenue_lift_vs_rule_same_controller` (marca over
`rule_same_controller`, both under the feedback λ at u* 0.85: the learned agents alone under a feedback λ; the
headline until 2026-12-05) and `revenue_lift_vs_rule_mpc` (mpc over `rule_mpc`: the agents alone when both get the
MPC). `revenue_lift_vs_static` is unchanged (marca under the feedback λ at 0.85 over the static allocation).

Lifts are ratios of mean revenue per request − 1 with 95 % t-intervals over the paired per-day lifts.
`--quick`: 2 seeds, fewer training intervals and requests (say so when quoting it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.common import Metric, write_result
from serving.balancer import (
    SERVED_ANCHOR_GAIN,
    SERVED_BIAS_GAIN,
    SERVED_SET_POINT,
    CurveLoadModel,
    DiurnalTrafficForecast,
    FeedbackBalancer,
    MPCBalancer,
)
from training.algorithms import marca as M
from training.envs import allocate_oracle as O
from training.envs.allocate import AllocateConfig, BatchedAllocateSim

VARIANTS = ("marca", "qmix", "vdn", "dqn")
# headroom_allocate's winners, searched on days 3000–3007 (until 2026-12-05 on 1000–1007, which hold this
# benchmark's reported days 1000–1004: then the static action was (1, 1, 1, 1, 2, 0) and the rule's u* 0.82).
STATIC_ACTION = (1, 0, 1, 1, 2, 0)  # best static allocation
# headroom_allocate's best rule, feedback λ (u*, g), searched with at most 0.5 % of intervals over budget (u* 0.86
# breaks it): the feedback λ MaRCA's agents run under in the same-controller comparison (`rule_same_controller`).
RULE_TARGET, RULE_GAIN = 0.85, 1.5
# The best rule held to the MPC's bound (ours, the lead's decision of 2026-12-05): the same feedback family with
# (u*, g) searched on the same days 3000–3007 for the most revenue with the paper's over-utilisation ≤ 0.01 —
# benchmarks/allocate_rule_search.py, winner in benchmarks/results/allocate_rule_search.json. Searched warm (each day
# after the day before, λ carried, as `rule` is scored): u* 0.90, g 1.5, 1.6902 cents/request, over-utilisation
# 0.0029 (0.91 next, 1.6900); cold (results/allocate_rule_search_cold.json) the same cell won, 1.6870 / 0.0028.
# Interior to the grid 0.80–0.98 × {0.5, 1.5, 3}. The baseline of the headline `allocate.marca.revenue_lift_vs_rule`.
BEST_RULE_TARGET, BEST_RULE_GAIN = 0.90, 1.5
ORACLE_TARGET = 0.88  # reference planner u* (unchanged by the move)
# MaRCA's training length, chosen on tuning seeds 10–12 (benchmarks/allocate_lift.py, docs/marca.md "Training
# length at u* 0.85"): 1,536 intervals × 8 updates (768 until 2026-12-05; 3,072 was +0.26 % more at twice the cost).
TRAIN_INTERVALS = 1536
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
_LOAD, _UTIL = 1, 2
PI_GAINS = (0.3, 0.05)  # (k_p, k_i) of the feedback balancer, scaled to this world's λ (see `pi`)
LAMBDA_MAX = 5.0


@dataclass(frozen=True)
class Day:
    """One evaluation day of one policy: per interval mean revenue per request, traffic, utilisation; Spearman."""

    revenue: np.ndarray
    traffic: np.ndarray
    utilisation: np.ndarray
    spearman: float

    @property
    def revenue_per_day(self) -> float:
        return float((self.revenue * self.traffic).sum() / self.traffic.sum())


def run_day(
    policy: Callable[[np.ndarray], np.ndarray],
    config: AllocateConfig,
    n: int,
    seed: int,
    learner: M.MarcaLearner | None = None,
    sample_every: int = 8,
    sample_requests: int = 64,
) -> Day:
    sim = BatchedAllocateSim(n, config, seed, autoreset=False)
    obs = sim.reset(seed)
    O.reset_if_stateful(policy)
    revenue, traffic, utilisation, rhos = [], [], [], []
    t = 0
    while True:
        next_obs, rewards, done, info = sim.step(policy(obs))
        revenue.append(float(rewards["revenue"].mean()))
        traffic.append(info["load"])
        utilisation.append(info["utilisation"])
        if learner is not None and t % sample_every == 0:
            rows = obs[:sample_requests]
            truth = O.expected_revenue(config, O.Requests.from_observation(rows), info["load"], info["utilisation"])
            predicted = learner.joint_action_values(torch.as_tensor(rows)).numpy()
            rhos += [spearmanr(p, q).statistic for p, q in zip(predicted, truth, strict=True)]
        obs, t = next_obs, t + 1
        if done.all():
            break
    return Day(
        np.asarray(revenue),
        np.asarray(traffic),
        np.asarray(utilisation),
        float(np.nanmean(rhos)) if rhos else float("nan"),
    )


class BalancerLambda:
    """λ controller for MarcaPolicy driven by a serving/balancer.py balancer (MPC or feedback), one call per interval."""

    def __init__(
        self,
        make: Callable[[], MPCBalancer | FeedbackBalancer],
        forecast: DiurnalTrafficForecast,
        intervals_per_day: int,
        initial: float = 1.0,
    ) -> None:
        self.make, self.forecast, self.per_day, self.initial = make, forecast, intervals_per_day, initial
        self.balancer: MPCBalancer | FeedbackBalancer | None = None
        self.reset()

    def reset(self) -> None:
        """A new day: cold (λ = initial) the first time; later days continue where the last ended, as a serving
        balancer runs day after day (only each day's first, neutral reading is skipped)."""
        if self.balancer is None:
            self.balancer, self.lam = self.make(), self.initial
        self._first, self.mpc_steps = True, 0
        # per interval of the day, the utilisation the MPC's plan predicted for it (nan where no plan decided),
        # the traffic forecast it read, and ∂Ĉ/∂m(q) of its prediction (to split its surprise: `surprise_parts`)
        self.predictions: list[float] = []
        self.forecasts: list[float] = []
        self.traffic_gains: list[float] = []

    def __call__(self, obs: np.ndarray) -> float:
        slot = O.interval_of(obs, self.per_day)
        prediction, forecast, gain = None, float("nan"), float("nan")
        if not self._first:  # the first reading of a day is the neutral 0
            measured, load = float(obs[0, _UTIL]), float(obs[0, _LOAD])
            self.forecast.observe((slot - 1) % self.per_day, load)
            if isinstance(self.balancer, MPCBalancer):
                horizon = self.balancer.horizon
                traffic = self.forecast.forecast(slot, horizon)
                self.lam = self.balancer.update(measured, traffic, self.lam, slot)
                self.mpc_steps += self.balancer.last_reason == "mpc"
                prediction, forecast = self.balancer.last_prediction, float(traffic[0])
                if isinstance(self.balancer.model, CurveLoadModel):
                    gain = traffic_gain(self.balancer.model, self.lam, slot)
            elif self.balancer is not None:
                self.lam = self.balancer.update(measured, self.lam)
        self.predictions.append(float("nan") if prediction is None else prediction)
        self.forecasts.append(forecast)
        self.traffic_gains.append(gain)
        self._first = False
        return self.lam


def traffic_gain(model: CurveLoadModel, lam: float, slot: int) -> float:
    """∂Ĉ_{t+1}/∂m(q_{t+1}) of the model's one-step prediction at λ in `slot`: θ₂ + θ₃·z(λ) + θ₄·sin h + θ₅·cos h."""
    th = model.theta
    angle = 2.0 * np.pi * (slot % model.slots_per_day) / model.slots_per_day
    return float(th[2] + th[3] * float(model.z(lam)) + th[4] * np.sin(angle) + th[5] * np.cos(angle))


def surprise_parts(model: CurveLoadModel, day: Day, ctl: BalancerLambda) -> tuple[np.ndarray, np.ndarray]:
    """The MPC's one-step surprises on `day` (utilisation − its plan's prediction) split into (traffic part, load-model
    part): the traffic part is what the prediction would have moved by had the model been given the interval's true
    traffic ℓ instead of the forecast q̂, (m(ℓ) − m(q̂))·∂Ĉ/∂m; the rest is the load model's error given the true
    traffic (and the observer's anchor and bias). nan where no plan decided."""
    kappa = model.contention
    m_true = day.traffic * (1.0 + kappa * (day.traffic - 1.0))
    q = np.asarray(ctl.forecasts)
    traffic_part = (m_true - q * (1.0 + kappa * (q - 1.0))) * np.asarray(ctl.traffic_gains)
    return traffic_part, day.utilisation - np.asarray(ctl.predictions) - traffic_part


class PerturbedFeedback(M.FeedbackLambda):
    """The feedback λ with multiplicative noise: excitation for fitting the load model on history days."""

    def __init__(self, target: float, gain: float, noise: float, seed: int) -> None:
        super().__init__(target, gain)
        self.noise, self.rng = noise, np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> float:
        return super().__call__(obs) * float(np.exp(self.noise * self.rng.standard_normal()))


Controller = Callable[[np.ndarray], float]
PolicyFactory = Callable[[Controller], Any]
"""Builds a policy around a λ controller (obs → λ, once per interval); the policy has `reset()` and `.lam`."""


def marca_policy(learner: M.MarcaLearner, cost: M.CostTable) -> PolicyFactory:
    return lambda controller: M.MarcaPolicy(learner, cost, controller)


class ControlledRule:
    """The rule's decision, argmax_a v_i·Q̂(a) − λ_t·C(a) (allocate_oracle.ValueCostRule), with λ_t from an outside
    controller (ours: the `rule_mpc` arm gives it the served MPC; with `M.FeedbackLambda(u*, g)` it is exactly
    ValueCostRule's feedback schedule)."""

    def __init__(self, quality: np.ndarray, cost: np.ndarray, controller: Controller) -> None:
        self.quality, self.cost, self.controller = quality, cost, controller
        self.lam = float("nan")

    def reset(self) -> None:
        O.reset_if_stateful(self.controller)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        lam = self.lam = float(self.controller(obs))
        value = O.Requests.from_observation(obs).value
        out: np.ndarray = O.ALL_ACTIONS[np.argmax(value[:, None] * self.quality[None, :] - lam * self.cost[None, :], 1)]
        return out


class WarmFeedbackLambda(M.FeedbackLambda):
    """The feedback λ run warm (ours, 2026-12-05): `reset()` at a new day keeps λ where the last day left it and only
    skips the day's first, neutral reading — as a served rule's controller would run day after day, and as the
    balancers (`BalancerLambda`) are scored. λ = `initial` only before the first day it ever sees. The one warm
    feedback controller of the rule arms: allocate_rule_search's search, `rule` here, allocate_diagnosis's
    `rule_warm`."""

    def reset(self) -> None:
        self._first = True


def warm_rule(quality: np.ndarray, cost: np.ndarray, target: float, gain: float) -> ControlledRule:
    """The feedback rule (ValueCostRule's "feedback" schedule exactly) with its λ carried across days; run it
    through the day before the scored one (`run_warm_day`)."""
    return ControlledRule(quality, cost, WarmFeedbackLambda(target, gain))


def best_rule_day(config: AllocateConfig, n: int, day: int) -> Day:
    """`rule`, the headline's baseline, on `day`: the best rule held to the MPC's bound, run WARM — through the day
    before first, λ carried — as the MPC arms are and as a served rule would run (ours, the lead's decision of
    2026-12-05; cold, λ = 1 at the day's start, until then: results/allocate_quality_cold_rule.*)."""
    quality, cost = O.rule_quality_table(config), O.cost_table(config)
    return run_warm_day(warm_rule(quality, cost, BEST_RULE_TARGET, BEST_RULE_GAIN), config, n, day)


def rule_policy(config: AllocateConfig) -> PolicyFactory:
    quality, cost = O.rule_quality_table(config), O.cost_table(config)
    return lambda controller: ControlledRule(quality, cost, controller)


def history_for_load_model(
    make_policy: PolicyFactory, config: AllocateConfig, n: int, seeds: Sequence[int], target: float
) -> tuple[CurveLoadModel, list[tuple[int, float]]]:
    """The curve load model fitted on history days run by the policy under a perturbed feedback λ, and the (slot,
    traffic) readings of those days (each evaluation controller warms its own diurnal forecast on them)."""
    controller = PerturbedFeedback(target, RULE_GAIN, 0.4, seeds[0])
    policy = make_policy(controller)
    per_day = config.intervals_per_day
    u, q, lam, slots = [], [], [], []
    for seed in seeds:
        sim = BatchedAllocateSim(n, config, seed, autoreset=False)
        obs = sim.reset(seed)
        policy.reset()
        while True:
            obs, _, done, info = sim.step(policy(obs))
            u.append(info["utilisation"])
            q.append(info["load"])
            lam.append(policy.lam)
            slots.append(int(info["interval"]) % per_day)
            if done.all():
                break
    model = CurveLoadModel.fit(np.asarray(u), np.asarray(q), np.asarray(lam), np.asarray(slots, np.int64), per_day)
    return model, list(zip(slots, q, strict=True))


FORECASTS = ("served", "plain")
"""The traffic forecasts the balancers can read: `served` = `DiurnalTrafficForecast`'s defaults (profile × level ×
the fitted AR(1) carry of the last deviation, smoothed profile; serving/balancer.py), `plain` = the forecast served
until 2026-12-05 (profile × a fast level, no carry)."""


def warmed_forecast(
    readings: Sequence[tuple[int, float]], per_day: int, kind: str = "served"
) -> DiurnalTrafficForecast:
    if kind == "plain":
        forecast = DiurnalTrafficForecast(per_day, level_weight=0.3, carry=False, smooth=False)
    elif kind == "served":
        forecast = DiurnalTrafficForecast(per_day)
    else:
        raise ValueError(f"forecast: expected one of {FORECASTS}, got {kind!r}")
    for slot, traffic in readings:
        forecast.observe(slot, traffic)
    return forecast


def pi(target: float) -> FeedbackBalancer:
    """serving/balancer.py's PI controller with gains in this world's λ units (cents per compute unit, λ ~ 0.1–1;
    the defaults k_p = 2, k_i = 0.5 swing λ across its whole range in one interval here)."""
    return FeedbackBalancer(target_utilisation=target, k_p=PI_GAINS[0], k_i=PI_GAINS[1], lambda_max=LAMBDA_MAX)


def evaluate_seed(job: tuple[int, int, int, float]) -> dict[str, Any]:
    """Train every variant on seed s and evaluate all policies on day 1000 + s."""
    seed, intervals, n, target = job
    torch.set_num_threads(1)
    config = AllocateConfig()
    day = 1000 + seed
    out: dict[str, Any] = {"seed": seed}
    out["static"] = run_day(O.StaticRule(STATIC_ACTION), config, n, day)
    quality, cost_table = O.rule_quality_table(config), O.cost_table(config)
    # the best rule held to the MPC's bound (the headline's baseline) and headroom_allocate's (the same-controller one)
    out["rule"] = best_rule_day(config, n, day)
    same_rule = O.ValueCostRule(quality, cost_table, "feedback", RULE_TARGET, gain=RULE_GAIN)
    out["rule_same_controller"] = run_day(same_rule, config, n, day)
    # the rule with λ from the served MPC at the set point: load model and forecast from the rule's own history days
    rule_mpc = controller_days(rule_policy(config), config, n, seed, target, controllers=("mpc",), ceiling=False)
    out["rule_mpc"], out["rule_mpc_share"] = rule_mpc["mpc"], rule_mpc["mpc_share"]
    out["rule_mpc_load_model_rmse"] = rule_mpc["load_model_rmse"]
    out["oracle"] = run_day(O.ReferencePlanner(config, ORACLE_TARGET), config, n, day)
    cfg = M.MarcaConfig(seed=seed, train_intervals=intervals, requests_per_interval=n)
    learners = {}
    for variant in VARIANTS:
        started = time.perf_counter()
        learner = M.train(cfg, variant, config).learner
        learners[variant] = learner
        cost = M.CostTable.from_simulator(config, learner.split)
        policy = M.MarcaPolicy(learner, cost, M.FeedbackLambda(RULE_TARGET, RULE_GAIN))
        out[variant] = run_day(policy, config, n, day, learner=learner)
        out[f"{variant}_train_s"] = time.perf_counter() - started
    # MPC vs feedback balancer, both driving MaRCA's agents at the set point
    learner = learners["marca"]
    cost = M.CostTable.from_simulator(config, learner.split)
    out.update(controller_days(marca_policy(learner, cost), config, n, seed, target))
    print(
        f"seed {seed}: " + ", ".join(f"{k} {v.revenue_per_day:.3f}" for k, v in out.items() if isinstance(v, Day)),
        flush=True,
    )
    return out


def controller_days(
    make_policy: PolicyFactory,
    config: AllocateConfig,
    n: int,
    seed: int,
    target: float,
    controllers: Sequence[str] = ("mpc", "mpc_paper", "feedback"),
    ceiling: bool = True,
    mpc_gains: tuple[float, float] = (SERVED_ANCHOR_GAIN, SERVED_BIAS_GAIN),
    forecast: str = "served",
) -> dict[str, Any]:
    """The balancers driving the policy `make_policy` builds around each λ controller (MaRCA's agents:
    `marca_policy`; the rule: `rule_policy`) at set point `target` on day 1000 + seed, each warm from the day
    before; the load model fitted and the forecast warmed on the policy's own history days 500 + seed and
    600 + seed; and the λ = 0 ceiling. `mpc_gains`: the served MPC's (anchor_gain, bias_gain)
    (serving/balancer.py); `forecast`: which traffic forecast the balancers read (`FORECASTS`)."""
    day, per_day = 1000 + seed, config.intervals_per_day
    model, readings = history_for_load_model(make_policy, config, n, [500 + seed, 600 + seed], target)
    out: dict[str, Any] = {"load_model_rmse": model.rmse}
    gains = {"mpc": mpc_gains, "mpc_paper": (1.0, 0.0)}
    for name in (c for c in controllers if c in gains):
        anchor_gain, bias_gain = gains[name]

        def make(anchor_gain: float = anchor_gain, bias_gain: float = bias_gain) -> MPCBalancer:
            return MPCBalancer(target_utilisation=target, model=model, lambda_max=LAMBDA_MAX, fallback=pi(target),
                               anchor_gain=anchor_gain, bias_gain=bias_gain)  # fmt: skip

        ctl = BalancerLambda(make, warmed_forecast(readings, per_day, forecast), per_day)
        out[name] = run_warm_day(make_policy(ctl), config, n, day)
        out[f"{name}_share"] = ctl.mpc_steps / max(1, per_day - 1)
        out[f"{name}_predictions"] = np.asarray(ctl.predictions)
        out[f"{name}_surprise_parts"] = surprise_parts(model, out[name], ctl)
    if "feedback" in controllers:
        feedback = BalancerLambda(lambda: pi(target), warmed_forecast(readings, per_day, forecast), per_day)
        out["feedback"] = run_warm_day(make_policy(feedback), config, n, day)
    # What any λ ≥ 0 controller can reach on the paper's utilisation: the agents at λ = 0 spend all they see
    # value in, and compute above budget earns nothing, so the bound is the mean of min(u at λ = 0, 1).
    if ceiling:
        out["ceiling"] = paper_utilisation(run_day(make_policy(lambda obs: 0.0), config, n, day).utilisation)
    return out


def run_warm_day(policy: Any, config: AllocateConfig, n: int, day: int) -> Day:
    """`day` scored after the policy's balancer ran through the day before (its state carried over)."""
    run_day(policy, config, n, day - 1)
    return run_day(policy, config, n, day)


def paired(new: Sequence[Day], base: Sequence[Day]) -> tuple[float, tuple[float, float] | None]:
    a = np.asarray([d.revenue_per_day for d in new])
    b = np.asarray([d.revenue_per_day for d in base])
    per_day = a / b - 1.0
    lift = float(a.mean() / b.mean() - 1.0)
    if per_day.size < 2:
        return lift, None
    half = T_975.get(per_day.size - 1, 1.96) * float(per_day.std(ddof=1)) / np.sqrt(per_day.size)
    return lift, (float(per_day.mean() - half), float(per_day.mean() + half))


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float] | None]:
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), None
    half = T_975.get(x.size - 1, 1.96) * float(x.std(ddof=1)) / np.sqrt(x.size)
    return float(x.mean()), (float(x.mean() - half), float(x.mean() + half))


def paper_utilisation(u: np.ndarray) -> float:
    """The paper's utilisation: mean over intervals of min(u, 1) (compute above budget earns nothing)."""
    return float(np.minimum(np.asarray(u, np.float64), 1.0).mean())


def paper_over_utilisation(u: np.ndarray) -> float:
    """The paper's over-utilisation: mean over intervals of max(u − 1, 0) (the excess, not a share of intervals)."""
    return float(np.maximum(np.asarray(u, np.float64) - 1.0, 0.0).mean())


RULE_ARMS = ("rule", "rule_same_controller", "rule_mpc")
CONTROLLED = ("mpc", "mpc_paper", "feedback", *RULE_ARMS)
"""Arms reported with the paper's utilisation and over-utilisation: MaRCA's agents under the three balancers, and
the three rules."""


def summarise(rows: list[dict[str, Any]], target: float) -> list[Metric]:
    days = {k: [r[k] for r in rows] for k in ("static", "oracle", *VARIANTS, *CONTROLLED)}
    metrics: list[Metric] = []

    def add_lift(name: str, new: str, base: str, note: str | None = None, goal: float | None = None) -> None:
        """`name`: the paired revenue lift of arm `new` over arm `base` (ratio of means − 1, 95 % CI)."""
        lift, ci = paired(days[new], days[base])
        metrics.append(Metric(name, lift, "ratio", goal=None if goal is None else (">=", goal), ci=ci, note=note))

    add_lift("allocate.marca.revenue_lift_vs_static", "marca", "static", goal=0.15)
    # Issue #16's lift over the rule, judged system against system (ours, docs/marca.md "How the lift over the rule
    # is judged"): MaRCA as served over the best rule held to the same budget bound.
    add_lift(
        "allocate.marca.revenue_lift_vs_rule",
        "mpc",
        "rule",
        goal=0.03,
        note=f"MaRCA as served (its agents, λ from the served MPC at set point {target}) over the best rule held "
        f"to the same bound (feedback λ over v·Q̂(a) − λ·C(a), u* = {BEST_RULE_TARGET}, g = {BEST_RULE_GAIN}, "
        "warm from the day before: allocate_rule_search, over-utilisation ≤ 0.01 on days 3000–3007); counts only with "
        "allocate.mpc.over_utilisation ≤ 0.01",
    )
    add_lift(
        "allocate.marca.revenue_lift_vs_rule_same_controller",
        "marca",
        "rule_same_controller",
        note=f"MaRCA's agents under the rule's own feedback λ (u* = {RULE_TARGET}, g = {RULE_GAIN}: "
        "headroom_allocate's best, ≤ 0.5 % of intervals over budget) over that rule: the agents alone",
    )
    add_lift(
        "allocate.marca.revenue_lift_vs_rule_mpc",
        "mpc",
        "rule_mpc",
        note=f"both arms with λ from the served MPC at set point {target}, each with its own load model and "
        "forecast: the agents alone under the MPC",
    )
    add_lift("allocate.oracle.revenue_lift_vs_rule", "oracle", "rule",
             note=f"the world's ceiling over the best rule (u* = {BEST_RULE_TARGET})")  # fmt: skip
    add_lift("allocate.oracle.revenue_lift_vs_rule_same_controller", "oracle", "rule_same_controller",
             note=f"over headroom_allocate's rule (u* = {RULE_TARGET})")  # fmt: skip
    for name in ("static", *RULE_ARMS, *VARIANTS, "mpc"):
        value, ci = mean_ci(
            [d.revenue_per_day / o.revenue_per_day for d, o in zip(days[name], days["oracle"], strict=True)]
        )
        metrics.append(
            Metric(
                f"allocate.{name}.return_pct", 100.0 * value, "%", ci=None if ci is None else (100 * ci[0], 100 * ci[1])
            )
        )
    for name in VARIANTS:
        value, ci = mean_ci([d.spearman for d in days[name]])
        metrics.append(Metric(f"allocate.{name}.spearman", value, "", ci=ci))
        if name != "marca":
            add_lift(f"allocate.marca.revenue_lift_vs_{name}", "marca", name)
    for name in ("static", "oracle", *VARIANTS):
        metrics.append(
            Metric(
                f"allocate.{name}.mean_utilisation",
                float(np.mean([d.utilisation.mean() for d in days[name]])),
                "budget",
            )
        )
        metrics.append(
            Metric(
                f"allocate.{name}.revenue_per_request", float(np.mean([d.revenue_per_day for d in days[name]])), "cents"
            )
        )
    feedback_util, _ = mean_ci([paper_utilisation(d.utilisation) for d in days["feedback"]])
    feedback_over, _ = mean_ci([paper_over_utilisation(d.utilisation) for d in days["feedback"]])
    arm_notes = {
        "mpc": f"MaRCA as served: its agents, the served MPC at target {target}",
        "mpc_paper": f"MaRCA's agents, the paper's plain MPC at target {target}",
        "feedback": f"MaRCA's agents, the PI feedback balancer at target {target}",
        "rule": f"the best rule held to over-utilisation ≤ 0.01 on the search days (u* = {BEST_RULE_TARGET}, "
        f"g = {BEST_RULE_GAIN}), warm from the day before",
        "rule_same_controller": f"headroom_allocate's rule (u* = {RULE_TARGET}, g = {RULE_GAIN}), cold",
        "rule_mpc": f"the rule's v·Q̂(a) − λ·C(a), the served MPC at target {target}",
    }
    for name in CONTROLLED:
        is_goal = name == "mpc"
        marca_balancer = name in ("mpc", "mpc_paper")
        util, util_ci = mean_ci([paper_utilisation(d.utilisation) for d in days[name]])
        over, over_ci = mean_ci([paper_over_utilisation(d.utilisation) for d in days[name]])
        metrics.append(
            Metric(
                f"allocate.{name}.utilisation",
                util,
                "budget",
                goal=(">=", 0.95) if is_goal else None,
                ci=util_ci,
                baseline=("allocate.feedback.utilisation", feedback_util) if marca_balancer else None,
                note=f"paper's definition: mean over intervals of min(u, 1); {arm_notes[name]}",
            )
        )
        metrics.append(
            Metric(
                f"allocate.{name}.over_utilisation",
                over,
                "budget",
                goal=("<=", 0.01) if is_goal else None,
                ci=over_ci,
                baseline=("allocate.feedback.over_utilisation", feedback_over) if marca_balancer else None,
                note="paper's definition: mean over intervals of max(u − 1, 0)",
            )
        )
        value, ci = mean_ci([float((d.utilisation > 1.0).mean()) for d in days[name]])
        metrics.append(Metric(f"allocate.{name}.share_of_intervals_over_budget", value, "share", ci=ci))
        value, ci = mean_ci([float(d.utilisation.mean()) for d in days[name]])
        metrics.append(Metric(f"allocate.{name}.mean_utilisation", value, "budget", ci=ci))
        if name in ("mpc", "mpc_paper", "rule_mpc"):
            value, ci = mean_ci([r[f"{name}_share"] for r in rows])
            metrics.append(Metric(f"allocate.{name}.mpc_share", value, "share of intervals", ci=ci))
        if marca_balancer:
            # The one-step surprise (utilisation − the plan's prediction) and its two parts (`surprise_parts`),
            # pooled over the seeds' planned intervals.
            traffic_part = np.concatenate([r[f"{name}_surprise_parts"][0] for r in rows])
            model_part = np.concatenate([r[f"{name}_surprise_parts"][1] for r in rows])
            ok = np.isfinite(traffic_part) & np.isfinite(model_part)
            for part, values in (
                ("one_step_surprise_std", traffic_part + model_part),
                ("surprise_traffic_std", traffic_part),
                ("surprise_load_model_std", model_part),
            ):
                metrics.append(Metric(f"allocate.{name}.{part}", float(values[ok].std()), "budget",
                                      note="pooled over seeds; surprise = traffic part + load-model part"))  # fmt: skip
        metrics.append(
            Metric(
                f"allocate.{name}.revenue_per_request",
                float(np.mean([d.revenue_per_day for d in days[name]])),
                "cents",
                note=arm_notes[name],
            )
        )
    value, _ = mean_ci([r["load_model_rmse"] for r in rows])
    metrics.append(Metric("allocate.mpc.load_model_rmse", value, "budget"))
    value, _ = mean_ci([r["rule_mpc_load_model_rmse"] for r in rows])
    metrics.append(Metric("allocate.rule_mpc.load_model_rmse", value, "budget"))
    value, ci = mean_ci([r["ceiling"] for r in rows])
    metrics.append(Metric("allocate.mpc.ceiling_utilisation", value, "budget", ci=ci,
                          note="MaRCA's agents at λ = 0: mean over intervals of min(u, 1); no λ ≥ 0 gets more"))  # fmt: skip
    return metrics


def verdict(metrics: Sequence[Metric]) -> str:
    """Issue #16's lift over the rule, as the lead defined it: the lift ≥ 0.03 and MaRCA-as-served's
    over-utilisation ≤ 0.01 on the reported days; and whether the rule kept the same bound there."""
    value = {m.name: m.value for m in metrics}
    lift, over = value["allocate.marca.revenue_lift_vs_rule"], value["allocate.mpc.over_utilisation"]
    rule_over = value["allocate.rule.over_utilisation"]
    met = lift >= 0.03 and over <= 0.01
    return (
        f"**Issue #16's lift over the rule: {'met' if met else 'not met'}** — MaRCA as served over the best rule held "
        f"to the same bound: {lift:+.4f} (goal ≥ 0.03), MaRCA-as-served's over-utilisation {over:.4f} (≤ 0.01 "
        f"{'kept' if over <= 0.01 else '**broken**'}); the rule's over-utilisation on these days {rule_over:.4f} "
        f"({'within' if rule_over <= 0.01 else '**over**'} the 0.01 it was searched under on days 3000–3007)."
    )


NOTES = """## Notes

* **How the lift over the rule is judged** (ours, the lead's decision of 2026-12-05; docs/marca.md).
  `allocate.marca.revenue_lift_vs_rule` is MaRCA as the issue defines and serving runs it — the agents with λ from
  the served MPC at serving/balancer.SERVED_SET_POINT (the `mpc` arm) — over the best rule held to the same budget
  bound: the feedback rule's (u*, g) searched on days 3000–3007 for the most revenue with the paper's
  over-utilisation ≤ 0.01 (benchmarks/allocate_rule_search.py; results/allocate_rule_search.md has every cell).
  It counts as met only together with `allocate.mpc.over_utilisation` ≤ 0.01 on these days (the line above).
* Side metrics, so the source of the lift stays visible: `revenue_lift_vs_rule_same_controller` (the agents under
  headroom_allocate's rule's feedback λ, u* 0.85, against that rule: what the learned agents alone are worth under a
  feedback λ; the headline until 2026-12-05, kept in allocate_quality_same_controller.*) and
  `revenue_lift_vs_rule_mpc` (both arms under the served MPC, each with a load model fitted and a forecast warmed on
  its own history days 500 + s and 600 + s: the agents alone under the MPC).
* **Warm rule** (ours, the lead's decision of 2026-12-05, a fairness correction against our own algorithm): `rule`
  runs warm — through day 999 + s first with its λ carried — as the MPC arms do and as a served rule would; it was
  searched warm too. On tuning days 1010–1019 the warm rule earned +0.20 % [0.19, 0.22] more than the cold one
  (allocate_diagnosis_ceiling_mpc.md), so the cold-rule run (allocate_quality_cold_rule.*, +2.47 % [2.17, 2.78])
  flattered MaRCA by about that much. `rule_same_controller` and the agents under its feedback λ stay cold (λ = 1
  at the day's start, as in headroom_allocate's search): the old comparison, unchanged for continuity.
* `revenue_lift_vs_static`, the QMIX/VDN/DQN comparisons, Return % and Spearman of the variants are unchanged: the
  agents under the feedback λ at u* 0.85.
"""


def markdown(metrics: list[Metric], header: str) -> str:
    lines = [header, "", "| metric | value | 95 % CI | goal | met |", "|---|---|---|---|---|"]
    for m in metrics:
        j = m.to_json()
        ci = f"[{m.ci[0]:.4f}, {m.ci[1]:.4f}]" if m.ci else ""
        goal = f"{m.goal[0]} {m.goal[1]}" if m.goal else ""
        met = "" if "met" not in j else ("yes" if j["met"] else "**no**")
        lines.append(f"| `{m.name}` | {m.value:.4f} {m.unit} | {ci} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", default="0,1,2,3,4", help="training seeds; evaluation day = 1000 + seed")
    p.add_argument(
        "--intervals",
        type=int,
        default=TRAIN_INTERVALS,
        help="training intervals per variant (96 = one day; default chosen on tuning seeds, see TRAIN_INTERVALS)",
    )
    p.add_argument("--requests", type=int, default=256, help="requests per interval")
    p.add_argument(
        "--target",
        type=float,
        default=SERVED_SET_POINT,
        help="set point C_m of the MPC and feedback balancers (default: the served one, chosen on tuning seeds)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (one seed each; the host is shared)")
    p.add_argument("--quick", action="store_true", help="2 seeds, 32 training intervals, 128 requests")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    intervals, n = args.intervals, args.requests
    if args.quick:
        seeds, intervals, n = seeds[:2], 32, 128
    start = time.perf_counter()
    jobs = [(s, intervals, n, args.target) for s in seeds]
    rows: list[dict[str, Any]] = []
    with get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
        # results are rewritten after every finished seed: an interrupted run leaves an honest partial file
        for row in pool.imap_unordered(evaluate_seed, jobs):
            rows.append(row)
            write_summary(rows, seeds, intervals, n, args, argv, time.perf_counter() - start)


def write_summary(
    rows: list[dict[str, Any]],
    seeds: list[int],
    intervals: int,
    n: int,
    args: argparse.Namespace,
    argv: list[str] | None,
    seconds: float,
) -> None:
    done = sorted(r["seed"] for r in rows)
    metrics = summarise(sorted(rows, key=lambda r: r["seed"]), args.target)
    command = ("python -m benchmarks.allocate_quality " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    extra = {
        "seeds": seeds,
        "seeds_completed": done,
        "train_intervals": intervals,
        "requests_per_interval": n,
        "quick": args.quick,
        "balancer_target": args.target,
        "seconds": seconds,
        "train_seconds": {v: float(np.mean([r[f"{v}_train_s"] for r in rows])) for v in VARIANTS},
    }
    path = write_result("allocate_quality", metrics, command=command, extra=extra)
    header = (
        f"# allocate quality (MaRCA) — {len(done)} of {len(seeds)} seeds done {done}"
        f"{' (--quick)' if args.quick else ''}, {intervals} training intervals, {n} requests/interval\n\n`{command}`"
    )
    text = markdown(metrics, header) + "\n" + verdict(metrics) + "\n\n" + NOTES
    Path(path).with_suffix(".md").write_text(text)
    print(text, flush=True)
    print(f"wrote {path} after {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
