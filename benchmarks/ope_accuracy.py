"""OPE accuracy against simulator ground truth: relative error per estimator and policy, CI coverage.

Setting (the `slot` simulator, training/envs/slot.py, discrete actions):

* behaviour policy: a noisy heuristic — softmax over "no live stream" and the
  six positions, favouring position 3 and inserting more when the predicted
  live watch time (observation field `live_candidate`) is high; ~40 % insertion;
* target policies at increasing distance: logits (1 − α)·behaviour + α·greedy,
  where "greedy" inserts near the top whenever predicted live watch time is
  high; α = 0.25 (near), 0.5 (mid), 1.0 (far), 1.5 (farther). Their distance is
  reported as the ESS share of the importance weights;
* one-step truth: the simulator's on-policy mean of each signal on each user's
  first request (fresh users, so the context distribution does not depend on
  the policy) with `truth_users` users; one-step estimators see the first
  request of `n_users` logged users;
* sequential truth: the on-policy discounted sum (each signal's γ) over each
  user's first `horizon` requests (0 after the session ends); sequential
  estimators see those logged episodes. FQE's features add a one-hot of the
  step index, because with a fixed horizon Q depends on the steps left.

Each of `repetitions` runs draws fresh users and logs. Reported per estimator
and policy: mean |estimate − truth| / |truth| over the runs (main signal
`live_watch_time`), and the share of runs whose 95 % CI covers the truth
(closed-form intervals; FQE's value only, as its bootstrap refits would
dominate the run time).

Run: python -m benchmarks.ope_accuracy [--repetitions 50] [--n-users 4000]
(set OPENBLAS_NUM_THREADS=1 on a shared 2-core machine; see tests/conftest.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, Metric, write_result
from models.problems import RANK, SLOT
from training.envs.behaviour import RankBehaviour
from training.envs.rank import BatchedRankSim
from training.envs.slot import BatchedSlotSim
from training.ope.core import Estimate
from training.ope.fqe import FQEConfig, fit_fqe
from training.ope.one_step import direct_method, doubly_robust, ips, kernel_log_density, ncis, snips, switch_dr
from training.ope.reward_models import (
    categorical_expected_features,
    categorical_features,
    fit_ridge,
    gaussian_expected_features,
    gaussian_features,
)
from training.ope.sequential import pdis, sequential_doubly_robust, wpdis
from training.ope.weights import softmax

N_ACTIONS = SLOT.action.n  # type: ignore[union-attr]
LIVE_EXPECTED = SLOT.observation_slices()["live_candidate"].start  # predicted live watch time / 60 s
MAIN = SLOT.main_signal
SIGNALS = SLOT.signal_names
DISCOUNTS = np.array([s.discount for s in SLOT.signals])
POLICIES: dict[str, float] = {"near": 0.25, "mid": 0.5, "far": 1.0, "farther": 1.5}
ONE_STEP = ("dm", "ips", "snips", "dr", "switch_dr")
SEQUENTIAL = ("pdis", "wpdis", "sequential_dr", "fqe")
Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the benchmark."""

    repetitions: int = 50
    """Independent logging runs per policy."""
    n_users: int = 4000
    """Logged users per run (one-step rows; sequential episodes)."""
    horizon: int = 3
    """Requests per user in the sequential setting."""
    truth_users: int = 200_000
    """Users simulated on-policy for each ground-truth value."""
    switch_tau: float = 10.0
    """Switch-DR threshold."""
    seed: int = 0
    """Base seed (the catalog is fixed by it; users differ per run)."""
    policies: dict[str, float] = field(default_factory=lambda: dict(POLICIES))
    """Target policy name → mixing weight α towards the greedy policy."""

    def __post_init__(self) -> None:
        if self.repetitions < 2 or self.n_users < 100 or self.horizon < 1 or self.truth_users < 1000:
            raise ValueError("BenchConfig: repetitions >= 2, n_users >= 100, horizon >= 1, truth_users >= 1000")


def _z(x: np.ndarray) -> np.ndarray:
    # Centred at the population median of the field (~0.88 with the default world).
    return x[:, LIVE_EXPECTED] - 0.88


def behaviour_logits(x: np.ndarray) -> np.ndarray:
    logits = np.zeros((x.shape[0], N_ACTIONS))
    logits[:, 0] = 2.0
    logits[:, 1:] = np.array([-0.6, -0.3, 0.0, -0.3, -0.6, -0.9]) + _z(x)[:, None]
    return logits


def greedy_logits(x: np.ndarray) -> np.ndarray:
    logits = np.zeros((x.shape[0], N_ACTIONS))
    logits[:, 0] = 1.0 - 4.0 * _z(x)
    logits[:, 1:] = np.array([0.5, 0.3, 0.0, -0.5, -1.0, -1.5])
    return logits


def mixed_policy(alpha: float) -> Policy:
    def probs(x: np.ndarray) -> np.ndarray:
        return softmax((1 - alpha) * behaviour_logits(x) + alpha * greedy_logits(x), axis=1)

    return probs


def behaviour(x: np.ndarray) -> np.ndarray:
    return softmax(behaviour_logits(x), axis=1)


def _sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random((p.shape[0], 1))
    chosen: np.ndarray = np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), p.shape[1] - 1)
    return chosen


@dataclass
class Episodes:
    """Logged data of one run: (U users, H steps)."""

    obs: np.ndarray  # (U, H, D)
    actions: np.ndarray  # (U, H)
    rewards: np.ndarray  # (U, H, S)
    active: np.ndarray  # (U, H) bool: the request happened (session not ended before it)
    propensity: np.ndarray  # (U, H)


def simulate(policy: Policy, n_users: int, horizon: int, sim_seed: int, user_seed: int) -> Episodes:
    """`horizon` requests for `n_users` fresh users under `policy` (same catalog for every user_seed)."""
    sim = BatchedSlotSim(n_users, seed=sim_seed, autoreset=False)
    # A new user draw on the same catalog: reset() without a seed re-draws users from the stored seed
    # (reset(seed) would also re-draw the catalog, changing the truth).
    sim._seed = user_seed
    x = sim.reset().astype(np.float64)
    rng = np.random.default_rng([user_seed, 7])
    obs, acts, rews, act_mask, props = [], [], [], [], []
    for _ in range(horizon):
        p = policy(x)
        a = _sample(p, rng)
        nxt, rewards, _, info = sim.step(a)
        obs.append(x)
        acts.append(a)
        rews.append(np.stack([rewards[s] for s in SIGNALS], axis=1).astype(np.float64))
        act_mask.append(info["active"].astype(bool))
        props.append(p[np.arange(n_users), a])
        x = nxt.astype(np.float64)
    return Episodes(np.stack(obs, 1), np.stack(acts, 1), np.stack(rews, 1), np.stack(act_mask, 1), np.stack(props, 1))


def ground_truth(policy: Policy, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """(one-step per-signal mean on the first request, discounted sum over `horizon` requests), each (S,)."""
    chunks = max(1, cfg.truth_users // 50_000)
    one, seq = [], []
    for k in range(chunks):
        ep = simulate(policy, cfg.truth_users // chunks, cfg.horizon, cfg.seed, 10_000_000 + k)
        r = ep.rewards * ep.active[..., None]
        one.append(r[:, 0].mean(axis=0))
        seq.append((r * DISCOUNTS[None, None] ** np.arange(cfg.horizon)[None, :, None]).sum(axis=1).mean(axis=0))
    return np.mean(one, axis=0), np.mean(seq, axis=0)


def _with_step(x: np.ndarray, t: np.ndarray, horizon: int) -> np.ndarray:
    return np.concatenate([x, np.eye(horizon)[t]], axis=1)


def estimate_run(
    ep: Episodes, targets: dict[str, Policy], cfg: BenchConfig
) -> dict[str, dict[str, Estimate | np.ndarray]]:
    """Every estimator for every target on one run's logs."""
    u, h, d = ep.obs.shape
    out: dict[str, dict[str, Any]] = {name: {} for name in targets}
    # one-step: the first request of each user
    x0, a0, r0, b0 = ep.obs[:, 0], ep.actions[:, 0], ep.rewards[:, 0], ep.propensity[:, 0]
    phi0 = categorical_features(x0, a0, (N_ACTIONS,))
    model0 = fit_ridge(phi0, r0, l2=1e-3)
    q_logged0 = model0.predict(phi0)
    # sequential: flat transitions of active steps, step index in the features
    mask = ep.active
    flat_u, flat_t = np.nonzero(mask)
    xs = _with_step(ep.obs[flat_u, flat_t], flat_t, h)
    a_flat = ep.actions[flat_u, flat_t]
    r_flat = ep.rewards[flat_u, flat_t]
    phi = categorical_features(xs, a_flat, (N_ACTIONS,))
    # A transition ends its episode at the horizon or when the user's next request never came.
    next_active = np.zeros_like(mask)
    next_active[:, :-1] = mask[:, 1:]
    last = ~next_active[flat_u, flat_t]
    next_t = np.minimum(flat_t + 1, h - 1)
    x_next = _with_step(ep.obs[flat_u, next_t], next_t, h)
    for name, pi in targets.items():
        p0 = pi(x0)
        t0 = p0[np.arange(u), a0]
        q_target0 = model0.predict(categorical_expected_features(x0, [p0]))
        out[name]["dm"] = direct_method(q_target0, signals=SIGNALS)
        out[name]["ips"] = ips(r0, t0, b0, signals=SIGNALS)
        out[name]["snips"] = snips(r0, t0, b0, signals=SIGNALS)
        out[name]["dr"] = doubly_robust(r0, t0, b0, q_logged0, q_target0, signals=SIGNALS)
        out[name]["switch_dr"] = switch_dr(r0, t0, b0, q_logged0, q_target0, tau=cfg.switch_tau, signals=SIGNALS)
        # sequential
        p_all = pi(ep.obs.reshape(u * h, d)).reshape(u, h, N_ACTIONS)
        target = np.take_along_axis(p_all, ep.actions[..., None], axis=2)[..., 0]
        rew = ep.rewards * mask[..., None]
        out[name]["pdis"] = pdis(rew, mask, target, ep.propensity, DISCOUNTS, signals=SIGNALS)
        out[name]["wpdis"] = wpdis(rew, mask, target, ep.propensity, DISCOUNTS, signals=SIGNALS)
        exp_phi = categorical_expected_features(xs, [p_all[flat_u, flat_t]])
        next_phi = categorical_expected_features(x_next, [p_all[flat_u, next_t]])
        q_model = fit_fqe(phi, r_flat, next_phi, last.astype(float), DISCOUNTS, FQEConfig(l2=1e-4))
        first = flat_t == 0
        out[name]["fqe"] = q_model.predict(exp_phi[first]).mean(axis=0)
        q_ep = np.zeros((u, h, len(SIGNALS)))
        v_ep = np.zeros((u, h, len(SIGNALS)))
        q_ep[flat_u, flat_t] = q_model.predict(phi)
        v_ep[flat_u, flat_t] = q_model.predict(exp_phi)
        out[name]["sequential_dr"] = sequential_doubly_robust(
            rew, mask, target, ep.propensity, DISCOUNTS, q_ep, v_ep, signals=SIGNALS
        )
    return out


def run(cfg: BenchConfig) -> dict[str, Any]:
    targets = {name: mixed_policy(alpha) for name, alpha in cfg.policies.items()}
    t0 = time.perf_counter()
    truth = {name: ground_truth(pi, cfg) for name, pi in targets.items()}
    behaviour_truth = ground_truth(behaviour, cfg)
    print(f"ground truth: {time.perf_counter() - t0:.1f} s", flush=True)
    main = SIGNALS.index(MAIN)
    errors: dict[str, dict[str, list[float]]] = {n: {e: [] for e in (*ONE_STEP, *SEQUENTIAL)} for n in targets}
    covers: dict[str, dict[str, list[bool]]] = {n: {e: [] for e in (*ONE_STEP, *SEQUENTIAL)} for n in targets}
    naive: dict[str, dict[str, list[float]]] = {n: {"one_step": [], "sequential": []} for n in targets}
    constraint_err: dict[str, list[float]] = {n: [] for n in targets}
    ess_share: dict[str, list[float]] = {n: [] for n in targets}
    for rep in range(cfg.repetitions):
        t_rep = time.perf_counter()
        ep = simulate(behaviour, cfg.n_users, cfg.horizon, cfg.seed, 1000 + rep)
        results = estimate_run(ep, targets, cfg)
        logged = ep.rewards * ep.active[..., None]
        logged_one = logged[:, 0, main].mean()
        logged_seq = (logged[..., main] * DISCOUNTS[main] ** np.arange(cfg.horizon)).sum(axis=1).mean()
        for name in targets:
            naive[name]["one_step"].append(float(abs(logged_one - truth[name][0][main]) / truth[name][0][main]))
            naive[name]["sequential"].append(float(abs(logged_seq - truth[name][1][main]) / truth[name][1][main]))
        for name, per_est in results.items():
            one_truth, seq_truth = truth[name]
            for est_name, est in per_est.items():
                tv = seq_truth if est_name in SEQUENTIAL else one_truth
                value = est if isinstance(est, np.ndarray) else est.value
                errors[name][est_name].append(float(abs(value[main] - tv[main]) / abs(tv[main])))
                if isinstance(est, Estimate):
                    covers[name][est_name].append(bool(est.covers(tv)[main]))
            i_exp = SIGNALS.index("live_exposure")
            dr = per_est["dr"]
            assert isinstance(dr, Estimate)
            constraint_err[name].append(float(abs(dr.value[i_exp] - one_truth[i_exp]) / one_truth[i_exp]))
            ips_est = per_est["ips"]
            assert isinstance(ips_est, Estimate) and ips_est.diagnostics is not None
            ess_share[name].append(ips_est.diagnostics.ess_share)
        if rep == 0 or (rep + 1) % 10 == 0:
            el = time.perf_counter() - t0
            print(
                f"run {rep + 1}/{cfg.repetitions}: {time.perf_counter() - t_rep:.1f} s/run, elapsed {el:.0f} s",
                flush=True,
            )
    return {
        "truth": {
            n: {
                "one_step": dict(zip(SIGNALS, truth[n][0].tolist(), strict=True)),
                "sequential": dict(zip(SIGNALS, truth[n][1].tolist(), strict=True)),
            }
            for n in targets
        },
        "behaviour_truth": {
            "one_step": dict(zip(SIGNALS, behaviour_truth[0].tolist(), strict=True)),
            "sequential": dict(zip(SIGNALS, behaviour_truth[1].tolist(), strict=True)),
        },
        "errors": errors,
        "naive": naive,
        "covers": covers,
        "constraint_relative_error": constraint_err,
        "ess_share": ess_share,
        "seconds": time.perf_counter() - t0,
    }


def metrics(res: dict[str, Any], cfg: BenchConfig) -> list[Metric]:
    out: list[Metric] = []
    names = list(cfg.policies)
    nearest = names[0]
    for name in names:
        ess = float(np.mean(res["ess_share"][name]))
        for est in (*ONE_STEP, *SEQUENTIAL):
            errs = res["errors"][name][est]
            goal = ("<=", 0.10) if name == nearest and est in ("dr", "fqe") else None
            lo, hi = np.percentile(errs, [5, 95])
            kind = "sequential" if est in SEQUENTIAL else "one_step"
            out.append(
                Metric(
                    f"ope.{est}.{name}.relative_error",
                    float(np.mean(errs)),
                    "fraction",
                    # Baseline: reading the behaviour policy's logged mean as if it were the target's value.
                    baseline=(
                        f"ope.logged_mean.{name}.{kind}.relative_error",
                        float(np.mean(res["naive"][name][kind])),
                    ),
                    goal=goal,
                    ci=(float(lo), float(hi)),
                    note=f"mean |est − truth|/truth of {MAIN} over {len(errs)} runs (ci: 5th–95th pct); "
                    f"α={cfg.policies[name]}, IPS ESS share {ess:.2f}",
                )
            )
    for est in (*ONE_STEP, *SEQUENTIAL):
        if est == "fqe":
            continue
        pooled = [c for n in names for c in res["covers"][n][est]]
        goal = (">=", 0.90) if est == "dr" else None
        out.append(
            Metric(
                f"ope.{est}.ci_coverage",
                float(np.mean(pooled)),
                "fraction",
                goal=goal,
                note=f"share of 95% CIs covering the truth of {MAIN}, {len(pooled)} intervals "
                f"({cfg.repetitions} runs × {len(names)} policies)",
            )
        )
        for n in names:
            out.append(
                Metric(
                    f"ope.{est}.{n}.ci_coverage",
                    float(np.mean(res["covers"][n][est])),
                    "fraction",
                    goal=(">=", 0.90) if est == "dr" else None,
                )
            )
    for n in names:
        out.append(
            Metric(
                f"ope.dr.{n}.constraint.live_exposure.relative_error",
                float(np.mean(res["constraint_relative_error"][n])),
                "fraction",
                note="DR on the constrained signal (live exposure ratio)",
            )
        )
    return out


def markdown(res: dict[str, Any], cfg: BenchConfig, ms: list[Metric]) -> str:
    names = list(cfg.policies)
    lines = [
        "# OPE accuracy on the `slot` simulator",
        "",
        f"{cfg.repetitions} runs × {cfg.n_users} logged users; truth from {cfg.truth_users} on-policy users. "
        f"Main signal `{MAIN}`. One-step estimators: first request (per-decision mean). Sequential: "
        f"discounted sum over {cfg.horizon} requests (γ per signal). Cells: mean relative error "
        "(95% CI coverage).",
        "",
        "| estimator | "
        + " | ".join(f"{n} (α={cfg.policies[n]}, ESS {np.mean(res['ess_share'][n]):.2f})" for n in names)
        + " |",
        "|---|" + "---|" * len(names),
    ]
    for est in (*ONE_STEP, *SEQUENTIAL):
        cells = []
        for n in names:
            err = np.mean(res["errors"][n][est])
            cov = res["covers"][n][est]
            cells.append(f"{err:.3f}" + (f" ({np.mean(cov):.0%})" if cov else ""))
        lines.append(f"| {est} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Truth (one-step per-decision / sequential discounted, "
        f"{MAIN}): "
        + ", ".join(
            f"{n}: {res['truth'][n]['one_step'][MAIN]:.2f} / {res['truth'][n]['sequential'][MAIN]:.2f}" for n in names
        )
        + f"; behaviour: {res['behaviour_truth']['one_step'][MAIN]:.2f} / {res['behaviour_truth']['sequential'][MAIN]:.2f}.",
        "",
        "Goals:",
        "",
    ]
    for m in ms:
        if m.goal is not None and "." in m.name and m.name.count(".") <= 3:
            j = m.to_json()
            lines.append(
                f"- `{m.name}` = {m.value:.3f} (goal {m.goal[0]} {m.goal[1]}): {'met' if j['met'] else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# rank: continuous fusion weights, NCIS
# ---------------------------------------------------------------------------
RANK_POLICIES: dict[str, float] = {"rank_near": 0.02, "rank_mid": 0.035, "rank_far": 0.05}
RANK_SIGNALS = RANK.signal_names
RANK_REPORTED = ("watch_time", "like")
RANK_ESTIMATORS = ("dm", "kernel_ips", "dr", "ncis")
# Interaction entries of every stage (not watch time): the direction the targets move in.
_INTERACTION_ENTRIES = [j for j in range(RANK.action.flat_size) if j % 6 != 0]


@dataclass(frozen=True)
class RankBenchConfig:
    """Sizes of the continuous-action (NCIS) part."""

    repetitions: int = 50
    """Independent logging runs."""
    n_users: int = 4000
    """Logged first requests per run."""
    truth_users: int = 200_000
    """Users simulated on-policy for each deterministic target's truth."""
    behaviour_sigma: float = 0.1
    """σ of the truncated-normal behaviour around the default fusion weights (training/envs/behaviour.py)."""
    bandwidth: float = 0.1
    """NCIS Gaussian kernel bandwidth σ around the target action."""
    ncis_clip: float = 10.0
    """NCIS cap relative to the mean ratio."""
    seed: int = 0
    """Base seed; the catalog is fixed by it."""
    policies: dict[str, float] = field(default_factory=lambda: dict(RANK_POLICIES))
    """Target name → δ added to every interaction weight at every stage."""


def rank_target(delta: float) -> np.ndarray:
    mu = np.asarray(RANK.default_action, dtype=np.float64)
    mu[_INTERACTION_ENTRIES] += delta
    return np.clip(mu, 0.0, 1.0)


def _rank_first_request(
    n: int, user_seed: int, sim_seed: int, act: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = BatchedRankSim(n, seed=sim_seed, autoreset=False)
    sim._seed = user_seed  # new users, same catalog (see `simulate`)
    x = sim.reset().astype(np.float64)
    a = act(x)
    _, rewards, _, _ = sim.step(a.astype(np.float32))
    return x, a, np.stack([rewards[s] for s in RANK_SIGNALS], axis=1).astype(np.float64)


def run_rank(cfg: RankBenchConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    truth: dict[str, np.ndarray] = {}
    for name, delta in cfg.policies.items():
        mu = rank_target(delta)

        def deterministic(x: np.ndarray, mu: np.ndarray = mu) -> np.ndarray:
            return np.tile(mu, (x.shape[0], 1))

        parts = [
            _rank_first_request(cfg.truth_users // 4, 20_000_000 + k, cfg.seed, deterministic)[2].mean(axis=0)
            for k in range(4)
        ]
        truth[name] = np.mean(parts, axis=0)
    print(f"rank ground truth: {time.perf_counter() - t0:.1f} s", flush=True)
    idx = [RANK_SIGNALS.index(s) for s in RANK_REPORTED]
    errors: dict[str, dict[str, dict[str, list[float]]]] = {
        n: {e: {s: [] for s in RANK_REPORTED} for e in (*RANK_ESTIMATORS, "logged_mean")} for n in cfg.policies
    }
    covers: dict[str, dict[str, dict[str, list[bool]]]] = {
        n: {e: {s: [] for s in RANK_REPORTED} for e in RANK_ESTIMATORS} for n in cfg.policies
    }
    ess_share: dict[str, list[float]] = {n: [] for n in cfg.policies}
    for rep in range(cfg.repetitions):
        behaviour_policy = RankBehaviour(sigma=cfg.behaviour_sigma, seed=3000 + rep)
        logged_ld: list[np.ndarray] = []

        def act(x: np.ndarray, pol: RankBehaviour = behaviour_policy, out: list[np.ndarray] = logged_ld) -> np.ndarray:
            a, ld = pol.sample(x)
            out.append(ld.astype(np.float64))
            return a.astype(np.float64)

        x, a, r = _rank_first_request(cfg.n_users, 2000 + rep, cfg.seed, act)
        b_ld = logged_ld[0]
        phi = gaussian_features(x, a)
        model = fit_ridge(phi, r, l2=1e-3)
        q_logged = model.predict(phi)
        for name, delta in cfg.policies.items():
            centre = np.tile(rank_target(delta), (x.shape[0], 1))
            k_ld = kernel_log_density(a, centre, cfg.bandwidth, 0.0, 1.0)
            q_target = model.predict(gaussian_expected_features(x, centre, 0.0))
            ests = {
                "dm": direct_method(q_target, signals=RANK_SIGNALS),
                "kernel_ips": ips(r, k_ld, b_ld, log_space=True, signals=RANK_SIGNALS),
                "dr": doubly_robust(r, k_ld, b_ld, q_logged, q_target, log_space=True, signals=RANK_SIGNALS),
                "ncis": ncis(r, k_ld, b_ld, clip=cfg.ncis_clip, signals=RANK_SIGNALS),
            }
            diag = ests["ncis"].diagnostics
            assert diag is not None
            ess_share[name].append(diag.ess_share)
            tv = truth[name]
            for e, est in ests.items():
                for s, i in zip(RANK_REPORTED, idx, strict=True):
                    errors[name][e][s].append(float(abs(est.value[i] - tv[i]) / abs(tv[i])))
                    covers[name][e][s].append(bool(est.covers(tv)[i]))
            for s, i in zip(RANK_REPORTED, idx, strict=True):
                errors[name]["logged_mean"][s].append(float(abs(r[:, i].mean() - tv[i]) / abs(tv[i])))
        if rep == 0 or (rep + 1) % 10 == 0:
            print(f"rank run {rep + 1}/{cfg.repetitions}, elapsed {time.perf_counter() - t0:.0f} s", flush=True)
    return {
        "truth": {n: dict(zip(RANK_SIGNALS, v.tolist(), strict=True)) for n, v in truth.items()},
        "errors": errors,
        "covers": covers,
        "ess_share": ess_share,
        "seconds": time.perf_counter() - t0,
    }


def rank_metrics(res: dict[str, Any], cfg: RankBenchConfig) -> list[Metric]:
    out: list[Metric] = []
    for name in cfg.policies:
        ess = float(np.mean(res["ess_share"][name]))
        for e in RANK_ESTIMATORS:
            for s in RANK_REPORTED:
                errs = res["errors"][name][e][s]
                suffix = "" if s == RANK.main_signal else f".{s}"
                lo, hi = np.percentile(errs, [5, 95])
                out.append(
                    Metric(
                        f"ope.{e}.{name}.relative_error{suffix}",
                        float(np.mean(errs)),
                        "fraction",
                        baseline=(
                            f"ope.logged_mean.{name}.relative_error{suffix}",
                            float(np.mean(res["errors"][name]["logged_mean"][s])),
                        ),
                        ci=(float(lo), float(hi)),
                        note=f"rank, deterministic target δ={cfg.policies[name]}, kernel σ={cfg.bandwidth}, "
                        f"NCIS ESS share {ess:.2f}; {s}",
                    )
                )
    for e in RANK_ESTIMATORS:
        pooled = [c for n in cfg.policies for c in res["covers"][n][e][RANK.main_signal]]
        out.append(
            Metric(
                f"ope.{e}.rank.ci_coverage",
                float(np.mean(pooled)),
                "fraction",
                note=f"rank watch_time: share of 95% CIs covering the deterministic target's truth, {len(pooled)} intervals",
            )
        )
    return out


def rank_markdown(res: dict[str, Any], cfg: RankBenchConfig) -> str:
    names = list(cfg.policies)
    lines = [
        "",
        "# OPE accuracy on the `rank` simulator (continuous fusion weights, NCIS)",
        "",
        f"{cfg.repetitions} runs × {cfg.n_users} logged first requests; behaviour = truncated normal (σ = "
        f"{cfg.behaviour_sigma}) around the default weights; deterministic targets add δ to every interaction "
        f"weight; kernel σ = {cfg.bandwidth}. Cells: mean relative error, watch_time / like (95% CI coverage "
        "of watch_time). `logged_mean` reads the behaviour's logged mean as the target's value.",
        "",
        "| estimator | "
        + " | ".join(f"{n} (δ={cfg.policies[n]}, ESS {np.mean(res['ess_share'][n]):.2f})" for n in names)
        + " |",
        "|---|" + "---|" * len(names),
    ]
    for e in (*RANK_ESTIMATORS, "logged_mean"):
        cells = []
        for n in names:
            w, like = (np.mean(res["errors"][n][e][s]) for s in RANK_REPORTED)
            cov = res["covers"][n].get(e, {}).get("watch_time")
            cells.append(f"{w:.4f} / {like:.3f}" + (f" ({np.mean(cov):.0%})" if cov else ""))
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Truth (watch_time / like per request): "
        + ", ".join(f"{n}: {res['truth'][n]['watch_time']:.1f} / {res['truth'][n]['like']:.4f}" for n in names)
        + ".",
        "",
        "Reading: the kernel estimators (NCIS, kernel IPS) estimate the *smoothed* target N(μ, σ²), not the "
        "deterministic one; in this simulator fusion-weight noise itself raises likes by about 6 %, which is the "
        "bias NCIS shows on `like` and why its watch-time intervals rarely cover the deterministic truth. A "
        "smaller σ removes the bias but, in 18 dimensions, collapses the effective sample size. DR (kernel "
        "weights + the reward model) is the most accurate here; the targets move watch time by under 1 %, "
        "below every estimator's error at this sample size.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repetitions", type=int, default=50)
    ap.add_argument("--n-users", type=int, default=4000)
    ap.add_argument("--horizon", type=int, default=3)
    ap.add_argument("--truth-users", type=int, default=200_000)
    ap.add_argument("--rank-users", type=int, default=20_000, help="logged first requests per rank run")
    ap.add_argument("--skip-rank", action="store_true", help="only the slot (discrete) part")
    args = ap.parse_args(argv)
    cfg = BenchConfig(
        repetitions=args.repetitions, n_users=args.n_users, horizon=args.horizon, truth_users=args.truth_users
    )
    res = run(cfg)
    ms = metrics(res, cfg)
    rank_cfg = RankBenchConfig(repetitions=args.repetitions, n_users=args.rank_users, truth_users=args.truth_users)
    rank_res = None if args.skip_rank else run_rank(rank_cfg)
    if rank_res is not None:
        ms += rank_metrics(rank_res, rank_cfg)
    cmd = (
        f"python -m benchmarks.ope_accuracy --repetitions {cfg.repetitions} --n-users {cfg.n_users} "
        f"--horizon {cfg.horizon} --truth-users {cfg.truth_users} --rank-users {args.rank_users}"
    )
    path = write_result(
        "ope_accuracy",
        ms,
        command=cmd,
        extra={
            "truth": res["truth"],
            "behaviour_truth": res["behaviour_truth"],
            "seconds": res["seconds"],
            "simulator": "slot" if rank_res is None else "slot, rank",
            "rank_truth": None if rank_res is None else rank_res["truth"],
        },
    )
    md = markdown(res, cfg, ms) + (rank_markdown(rank_res, rank_cfg) if rank_res is not None else "")
    Path(RESULTS_DIR / "ope_accuracy.md").write_text(md)
    print(md)
    print(f"written {path}")


if __name__ == "__main__":
    main()
