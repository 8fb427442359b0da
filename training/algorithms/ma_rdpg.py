"""MA-RDPG on the sequential rank cascade: stage agents that cooperate through a recurrent message.

Paper: Feng et al., "Learning to Collaborate: Multi-Scenario Ranking via Multi-Agent Reinforcement
Learning" (WWW 2018; ../shared/PAPERS.md). Reads top to bottom: config, networks, the loss (critic,
actor, targets), the collect-and-learn loop on `BatchedRankSim`'s sequential view, the stage policy for
`training.rl.sim.evaluate_sequential`, export (per stage, for serving: serving/rank_messages.py), registry.
Train: `troupe train rank --algo ma_rdpg --sim --config configs/rank/ma_rdpg.yaml`.

The cascade as the paper's agents (its scenarios are search, recommendation and ads; ours are the three
rank stages, which act in turn on every request):
* agent k ∈ {pre_rank, rank, re_rank} is a deterministic actor a_k = μ_k(o_k, h) on its local
  observation o_k — the pool the upstream stages actually kept — and the message h;
* the message state is h ← LSTM_k(h, [o_k; a_k]) after every stage: passed stage to stage within a
  request and carried across the requests of a user's session (zero at a session's start);
* one centralised critic Q(k, h, o_k, a_k) → one value per signal of the team's reward vector (the
  page's watch time, clicks, likes, follows, comments, shares — every stage receives the team reward);
* DDPG updates from replay with target networks (Polyak τ).

The Bellman chain (ours: the paper's scenarios act at different times of a session, here three stages
make one decision together, so the request is cut into three agent steps): stage k < 2 gets no reward
and hands over to stage k+1 of the same request with discount 1; re-rank's step carries the page's
reward vector r and hands over to pre-rank of the next request with discount γ_i (0 at the end of the
user's horizon):
    y_i = r_i·[k = 2] + d_i · Q'_i(k', h', o', μ'_k'(o', h'))      h' = LSTM'_k(h, [o; a]), zeroed at a session end

The constrained scheme (RCPO's, ours on DDPG): the actors ascend the mixed value
    Q_mix = (Q̃_main + Σ_j ν_j s_j Q̃_j) / (1 + Σ_j ν_j)          s_j = +1 for ">=", −1 for "<="
with Q̃_i the critic on rewards scaled by 1/mean|r_i| (measured on the warm-up data, then fixed), and the
PID multipliers ν_j (`training.rl.lagrangian.ConstraintController`) updated once per iteration from the
measured per-request mean of every constrained signal; the shipped actors are the best feasible iterate
when one was found (as RCPO and TSCAC ship) — the actors' state that played the judged window (below).

DEPARTURES from the paper, marked:
* One LSTM cell per stage (each stage's `MessageActor` owns its message update), not one shared cell:
  each stage's actor then exports and serves on its own with the message as an extra input and output.
* Replay items are requests (the message state at the request's start, the three stages' observations
  and played actions, the page's reward): the messages inside a request are recomputed from the stored
  start state at every update (truncated backpropagation through time over the request's three stages;
  the start state itself is the one stored at collection, as R2D2's stored state without burn-in — the
  paper unrolls whole episodes).
* Who trains the message: the critic's loss (the cells are in the critic's optimiser, so h learns to
  carry what predicts the team's value downstream); the actor loss trains the policy heads on fixed
  messages. Our choice, tested on a relay where only the message can carry what the first stage saw
  (tests/unit/test_ma_rdpg.py); with the actor loss training the cells instead, that relay was not
  learned in the same budget.
* Serving runs the deterministic actions, and the message follows them; in training the message
  follows the played (noisy) actions.
* Reward shaping: the team reward vector of the problem spec replaces the paper's purchase / click /
  exit shaping, and the constrained scheme above is ours.
* Gaussian exploration noise per stage and request (σ a fraction of the box's half-width), not OU.
* `exploration: "session_state"` (ours, issue 18 nineteenth round, off by default; `SessionStateNoise`): the
  noise of a stage is held over a user's session and varies with its standardised observation, same N(0, σ²)
  marginal per request — the on-policy learners' held offsets (rank_quality NOTES, third round) on MA-RDPG.
* `obs_standardise` (ours, issue 18 twentieth round, off by default): every network reads the stage observation
  standardised per column with statistics fixed from the run's first iteration (`StandardisedObservation`; the
  paper feeds raw inputs); the first gradient step waits for the fit.
* What the best feasible tracker keeps (ours): the actors learn after every request, so the W iterations
  of a judged window were played by a moving policy, and the state at the window's end had not played
  any of it (on the rank benchmark's seeds 0 and 4, 66 actor steps past `actor_starts`, judged on
  the incumbent's play). The tracker keeps the snapshot taken before the actor updates of the window's
  newest iteration: the state that started playing it, and the newest iteration must meet every
  constraint on its own as well as on the window's mean (`BestFeasibleTracker.offer`). Not the middle
  iteration's: on the relay (tests/unit/test_ma_rdpg.py), where the multiplier swings the actors across
  the threshold, that state missed the constraint the window met.
* `per_request_mix` (ours): Q_mix reads Q̃_i·(1 − γ_i)/(1 − γ_main), every value in per-request units, so
  the multiplier ν_j trades relative per-request rates — what the PID measures — one for one.
* `deviation_bound` (ours): with `start_action`, each stage's actor acts within start ± the bound (the
  tanh squashes onto that box), so the deterministic policy stays where the exploration gave the critic
  data; the paper's actors act on the whole action space.
* Actors start at the spec's default stage weights (the last layer's bias; small last-layer weights),
  as the other rank learners start from the production default; or, with `start_action` (the warm start
  at the incumbent, ours), exactly at a given constant — the rank benchmark passes the best fixed fusion
  weights of its search, so the actors start feasible and learn state-dependent deviations from them.
* `start_policy` (ours, issue 18 fifteenth round, off by default: `train`'s argument, not a config field): the
  warm start at a STATE-DEPENDENT rule instead of a constant — each stage's actor is a residual
  μ_k(o_k, h) = clip(rule_k(o_k) + b·tanh(f_k(o_k, h)), box) (`ResidualStagePolicy`; b = `deviation_bound`),
  with f's last layer zeroed, so at the start every stage plays the rule exactly on its own local observation
  and then learns bounded deviations from it, as `deviation_bound` bounds them around a constant start.
* TD3's stabilisers (ours on MA-RDPG, issue 18 sixteenth round, each off by default; DEPARTURE from the paper's
  plain DDPG updates — Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods"):
  - `twin_critics` (clipped double Q, TD3 §4.2): two centralised critics and their targets, both regressing on
    one target whose bootstrap takes, per signal of the reward vector, the pessimistic of the two target
    critics' values (`clipped_double_q`): y_i = r_i·[k = 2] + d_i · min_j Q'_j,i(k', h', o', ã') for the main
    signal and every ">=" signal, the max for a "<=" constrained one (the actors push that value down, so its
    underestimate is what they would climb). Per signal, not on Q_mix: every signal's head learns its own TD
    error (as TSCAC's per-signal critics), and Q_mix's weights move with the multipliers every iteration. The
    actors ascend critic 1's Q_mix (as TD3's actor reads Q_θ1). The message cells stay one shared set per
    stage in the critics' optimiser, trained by the sum of both critics' losses (both read the same h).
  - `policy_delay` (delayed policy updates, TD3 §5.2): the actors step, and every target (actors with their
    cells, critics) moves by Polyak, once per `policy_delay` critic steps (`gradient_step`).
  - `target_noise` (target policy smoothing, TD3 §5.3): ã' = clip(μ'(o', h') + clip(ε, ±c·w), box), ε ~ N(0,
    (σ·w)²), w the half-width of `target_noise_box` — by default the box each stage's actor squashes onto (TD3's
    max_action is its actor's range): start ± `deviation_bound` (0.1 in the shipped config: σ 0.02, clip 0.05);
    the smoothed action is clipped to the full action box, where the played (noisy) actions lie.
* `initial_multipliers` (ours, issue 18 seventeenth round, off by default): every ν_j starts at a given value
  instead of 0. `hold_multipliers` (ours, off by default; DEPARTURE from the adaptive constrained scheme above:
  a fixed-penalty method) keeps ν at that start for the whole run, the PID's output unused — the PID multiplier
  and the actors push each other (rank_quality NOTES, sixteenth round).
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.problems import RANK, RANK_DEFAULT_STAGE_WEIGHTS, RANK_STAGES, BoxAction
from training.algorithms.ddpg import MessageActor, _mlp
from training.rl.functional import soft_update
from training.rl.lagrangian import ConstraintController, PIDLagrangianConfig, relative_violations
from training.rl.networks import START_BOUND_MARGIN, Standardise
from training.rl.offpolicy_functional import target_policy_smoothing
from training.rl.registry import AlgorithmSpec, register_algorithm
from training.rl.replay import ReplayBuffer
from training.rl.task import TaskSpec

if TYPE_CHECKING:
    from training.rl.trainer import RunConfig, RunResult

N_STAGES = len(RANK_STAGES)
HOLDOUT_DAYS = 3
"""Days per held-out user (`MARDPGConfig.holdout_users`): as the rank benchmark judges."""
HOLDOUT_USER_SEED = 50_000
"""Held-out users are drawn from seed HOLDOUT_USER_SEED + run seed: disjoint from the training users (the
run seed), the rank benchmark's search users (20 000 + s), its judged users (the world's own) and the
probe's fresh constant samples (40 000 + 100·k + s)."""

StartPolicy = Callable[[int, np.ndarray], np.ndarray]
"""(stage index k, stage k's local observations o_k (N, O)) → stage k's weights (N, d): the state-dependent start
of `train`'s `start_policy` (ours). Numpy in, numpy out: a rule evaluated without gradient."""

Judge = Callable[[Sequence[MessageActor]], tuple[float, np.ndarray]]
"""Stage actors → (watch time per user-day, the constrained signals' per-request means in constraint order)
on held-out users (`MARDPGConfig.holdout_users`)."""


@dataclass(frozen=True)
class MARDPGConfig:
    hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths of every actor and the critic."""
    message_size: int = 16
    """H: the message h (the LSTM's hidden state; the carried state is [h; c], 2H)."""
    cell: str = "lstm"
    """Message cell: "lstm" (the paper) or "gru" (ours)."""
    message: bool = True
    """False: the ablation without communication — every actor and the critic read a zero message."""
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    """Polyak rate of the target actors, cells and critic."""
    batch_size: int = 256
    """Requests (three agent steps each) per gradient step."""
    buffer_capacity: int = 100_000
    """Replay capacity in requests (of one row each)."""
    learning_starts: int = 4
    """Requests (× n_envs rows) collected before the first gradient step; the reward scales are measured on them."""
    updates_per_request: int = 2
    """Gradient steps per request of all rows."""
    actor_starts: int = 0
    """Ours: requests (× n_envs rows) before the actors' first gradient step; the critic (and the message cells)
    learn from the start. With the warm start at an incumbent constant (`start_action`), the critic first learns
    the value around the incumbent, so the actors' first steps follow ∂Q/∂a of a trained critic instead of an
    untrained one's (which moved the warm-started actors by ±10 % of watch time either way on probe seeds).
    Must be below the run's length in requests (iterations × rollout_steps): `train` refuses a run in
    which the actors would never train."""
    exploration_std: float = 0.2
    """σ of the Gaussian exploration noise as a fraction of the box's half-width (0.2 → ±0.1 in weight units)."""
    exploration: str = "per_request"
    """How the exploration noise is drawn: "per_request" (the paper's DDPG form) — fresh per stage and request;
    "session_state" (ours, issue 18 nineteenth round; `SessionStateNoise`) — a noise matrix per row, stage and
    SESSION applied to the stage's standardised observation, so the offset is held over the session and
    varies with the state; every request's noise keeps the same N(0, σ²) marginal."""
    state_noise_share: float = 0.5
    """ρ of "session_state": the share of the noise's variance that follows the observation (0: one offset held
    for the whole session; 1: fully state-dependent); two requests of a session correlate (1 − ρ) + ρ·cos(ô, ô')."""
    obs_standardise: bool = False
    """Ours (issue 18, twentieth round; DEPARTURE from the paper's raw inputs, off by default): every network reads
    the stage observation o_k standardised per column — each stage's actor ([o; h] → a) and message cell ([o; a]
    → h'), their targets, and the critics (o_k in Q(k, h, o_k, a)); the message and the actions are not. The
    statistics are stage k's observations of the run's first iteration (`train`: `fit_observation_statistics`),
    fixed then and never refitted; no gradient step is taken before (the first one waits for the fit when
    `learning_starts` is earlier). Why: the raw columns' std range 0.013–3.1, so the MLPs barely see the small
    ones (the pool's predicted rates, sociability; the completion EMA) the state-dependent trade depends on."""
    discounts: tuple[float, ...] | None = None
    """γ per signal (spec order); None = the task's."""
    init_at_default: bool = True
    """On the rank task: start every stage's actor at the spec's default stage weights (ours; module docstring)."""
    start_action: tuple[float, ...] = ()
    """Ours (warm start at the incumbent, as `LossConfig.start_action`): the joint action (stages in order)
    every stage's actor plays exactly in every state at the start — last layer's weights zeroed, bias at the
    stage's slice (`_start_at`); overrides `init_at_default`. Empty = `init_at_default`'s start."""
    per_request_mix: bool = False
    """Ours: mix the signals' values in per-request units — Q̃_i·(1 − γ_i)/(1 − γ_main), the discounted sum
    divided by its horizon — so a multiplier weighs a relative change of a constrained signal's per-request
    rate (what the constraint and the PID read) against the same relative change of the main signal's.
    Without it, a signal with γ 0.9 enters Q_mix at a tenth of the scale of the main signal's (γ 0.99), so
    the multiplier must grow ~10× before it balances the main value's gradient."""
    deviation_bound: float = 0.0
    """Ours (with `start_action`; 0 = the full box): each stage's actor acts within start ± this bound (clipped
    to the box) — its tanh squashes onto that narrower box — so the deterministic policy stays where the
    exploration (σ = exploration_std × half-width around it) gave the critic data. Unbounded, the actors
    left that region within a few iterations and swung between box corners (per-request watch time
    90–218 s vs the incumbent's ~145 s) where the critic extrapolates: the last iterate lost 14–17 % of
    watch time per user-day on every probe seed (rank_quality, ninth round)."""
    dual_lr: float = 0.5
    """K_I of the PID multipliers (per iteration, on the relative violation)."""
    multiplier_kp: float = 3.0
    """K_P of the PID multipliers."""
    multiplier_smoothing: float = 1.0
    """α of the violation's EMA the P term reads (1 = this iteration's violation, as RCPO's config)."""
    max_multiplier: float = 20.0
    initial_multipliers: tuple[float, ...] = ()
    """Ours (issue 18, seventeenth round; () = off: every ν_j starts at 0, as before): ν_j at the start, one value
    per constraint in the task's order (the PID's integral starts at ν_j / K_I, `PIDLagrangian`'s `initial`);
    each in [0, max_multiplier]. The mix the actors ascend reads them from the first request on."""
    hold_multipliers: bool = False
    """Ours, DEPARTURE from the paper's adaptive constrained scheme (a fixed-penalty method): ν stays at
    `initial_multipliers` for the whole run — the controller still measures the batch and the tracker still
    keeps the best feasible iterate, but the PID's output is not used. Requires `initial_multipliers`. Why:
    the PID multiplier and the actors push each other (rank_quality NOTES, sixteenth round); a fixed ν
    asks whether a constant trade of comments against watch time holds the learner stable AND feasible."""
    margin: float = 0.03
    """Relative margin the multipliers aim inside every threshold (the measured values are the noisy policy's)."""
    best_feasible_window: int = 3
    """Iterations averaged to judge an iterate for the best feasible one."""
    holdout_users: int = 0
    """Ours (issue 18; 0 = off, as before): choose what ships on held-out users instead of the training batch.
    The tracker judges iterates on one noisy 64-env batch, so the iterate it keeps is over-read on watch
    time and on the constraints alike (a winner's curse: on tuning seeds what shipped landed ~3 % below the
    reference constant's comment rate whatever the margin). With N > 0, the last `holdout_candidates`
    iterates the tracker kept (each was its best at the time) are judged at the end of training on N fresh
    users of the training world (`fit`: user seed 50 000 + run seed, `HOLDOUT_DAYS` days) and the one with
    the most watch time per user-day among those meeting every constraint with `margin` ships; if none
    does, the one closest to feasible (`choose_on_holdout`)."""
    holdout_candidates: int = 4
    """Ours: how many of the tracker's latest kept iterates `holdout_users` judges."""
    holdout_spread: bool = False
    """Ours (with `holdout_users`): the candidates are `holdout_candidates` snapshots spread evenly over the
    run — the actors that started iterations ⌈(j+1)·I/K⌉ − 1, j < K, of the run's I iterations — plus the
    tracker's kept iterate, instead of the tracker's latest kept iterates. On tuning seed 100 those four were
    iterations 18–23 and played alike on the held-out users (watch time within 0.01 %): the tracker's
    records cluster late, so they give the held-out users no real choice."""
    twin_critics: bool = False
    """Ours on MA-RDPG (TD3's clipped double Q; DEPARTURE from the paper's DDPG): two critics, each signal's
    bootstrap the pessimistic of the two target critics' values for it (`clipped_double_q`; module docstring);
    the actors ascend critic 1's Q_mix. False: one critic, as the paper."""
    policy_delay: int = 1
    """Ours on MA-RDPG (TD3's delayed policy updates; TD3: 2): the actors step and the targets move by Polyak
    once per this many critic steps. 1: every critic step, as the paper's DDPG."""
    target_noise: float = 0.0
    """Ours on MA-RDPG (TD3's target policy smoothing; TD3: 0.2): σ of the Gaussian noise on the target actors'
    actions in the critic's target, as a fraction of `target_noise_box`'s half-width. 0: off, as the paper."""
    target_noise_clip: float = 0.5
    """The smoothing noise is clipped to ± this fraction of the same half-width (TD3: 0.5)."""
    target_noise_box: str = "actor"
    """Whose half-width scales `target_noise`: "actor" — the box each stage's actor squashes onto (start ±
    `deviation_bound`, the bound around a `start_policy` rule, else the full box; TD3's max_action is its actor's
    range); "action" — the full action box (0.5 per weight: σ 0.2 → 0.1, the exploration's σ)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.actor_starts < 0:
            raise ValueError(f"MARDPGConfig.actor_starts: must be >= 0, got {self.actor_starts}")
        for name in (
            "message_size",
            "batch_size",
            "buffer_capacity",
            "updates_per_request",
            "best_feasible_window",
            "holdout_candidates",
            "policy_delay",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"MARDPGConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.holdout_users < 0:
            raise ValueError(f"MARDPGConfig.holdout_users: must be >= 0 (0 = off), got {self.holdout_users}")
        if self.learning_starts < 1:
            raise ValueError(
                f"MARDPGConfig.learning_starts: must be >= 1 (the reward scales), got {self.learning_starts}"
            )
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"MARDPGConfig.cell: must be 'lstm' or 'gru', got {self.cell!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"MARDPGConfig.tau: must be in (0, 1], got {self.tau}")
        if self.actor_lr <= 0 or self.critic_lr <= 0:
            raise ValueError("MARDPGConfig.actor_lr and critic_lr: must be > 0")
        if self.exploration_std < 0 or self.margin < 0 or self.deviation_bound < 0:
            raise ValueError("MARDPGConfig.exploration_std, margin and deviation_bound: must be >= 0")
        if self.target_noise < 0 or self.target_noise_clip < 0:
            raise ValueError(
                f"MARDPGConfig.target_noise and target_noise_clip: must be >= 0 (0 = off), got "
                f"{self.target_noise}, {self.target_noise_clip}"
            )
        if any(not 0.0 <= v <= self.max_multiplier for v in self.initial_multipliers):
            raise ValueError(
                f"MARDPGConfig.initial_multipliers: every ν must be in [0, max_multiplier={self.max_multiplier}], "
                f"got {self.initial_multipliers}"
            )
        if self.hold_multipliers and not self.initial_multipliers:
            raise ValueError("MARDPGConfig.hold_multipliers: needs initial_multipliers (one ν per constraint) to hold")
        if self.exploration not in ("per_request", "session_state"):
            raise ValueError(
                f"MARDPGConfig.exploration: must be 'per_request' or 'session_state', got {self.exploration!r}"
            )
        if not 0.0 <= self.state_noise_share <= 1.0:
            raise ValueError(f"MARDPGConfig.state_noise_share: must be in [0, 1], got {self.state_noise_share}")
        if self.target_noise_box not in ("actor", "action"):
            raise ValueError(
                f"MARDPGConfig.target_noise_box: must be 'actor' or 'action', got {self.target_noise_box!r}"
            )
        if any(not math.isfinite(v) for v in self.start_action):
            raise ValueError(f"MARDPGConfig.start_action: every value must be finite, got {self.start_action}")
        if self.discounts is not None and not all(0.0 <= g < 1.0 for g in self.discounts):
            raise ValueError(f"MARDPGConfig.discounts: every γ must be in [0, 1), got {self.discounts}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MARDPGConfig:
        from training.rl.offpolicy_runner import config_from_dict

        return config_from_dict(cls, data)  # type: ignore[no-any-return]

    def pid_config(self) -> PIDLagrangianConfig:
        return PIDLagrangianConfig(
            kp=self.multiplier_kp,
            ki=self.dual_lr,
            smoothing=self.multiplier_smoothing,
            max_multiplier=self.max_multiplier,
        )


# ---------------------------------------------------------------- networks


def message_update(actor: MessageActor, obs: Tensor, action: Tensor, state: Tensor) -> Tensor:
    """The next message state after stage `actor` played `action` (the played, noisy one when exploring)."""
    return actor.cell(torch.cat([obs, action], dim=-1), state)


class StandardisedObservation(nn.Module):
    """Ours (`obs_standardise`): the leading `obs_size` columns of the input — the stage observation o of a
    policy head's [o; h] or a message cell's [o; a] — standardised (`Standardise`), the rest passed through.
    The exact identity until `fit_observation_statistics` fits it (mean 0, std 1), so a network with it plays
    bit for bit as one without it until then. Buffers only: the statistics export inside the ONNX graph."""

    def __init__(self, obs_size: int) -> None:
        super().__init__()
        self.obs_size = obs_size
        self.standardise = Standardise(obs_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.standardise(x[..., : self.obs_size]), x[..., self.obs_size :]], dim=-1)


class StandardisedCell(nn.Module):
    """Ours (`obs_standardise`): a message cell whose input [o; a] reads o standardised (`StandardisedObservation`);
    the same (input, state) → state interface as the cell it wraps."""

    def __init__(self, cell: nn.Module, obs_size: int) -> None:
        super().__init__()
        self.observation = StandardisedObservation(obs_size)
        self.cell = cell
        self.state_size: int = cell.state_size  # type: ignore[assignment]

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        out: Tensor = self.cell(self.observation(x), state)
        return out


def standardise_stage_inputs(actor: MessageActor, obs_size: int) -> None:
    """`obs_standardise`: put a `StandardisedObservation` of the first `obs_size` columns first in `actor`'s policy
    head (in its body, so a `ResidualStagePolicy`'s rule still reads the raw observation) and in front of its
    message cell. Adds no parameter and draws no random number: the networks' initialisation is unchanged."""
    body = actor.policy.body
    assert isinstance(body, nn.Sequential)
    body.insert(0, StandardisedObservation(obs_size))
    actor.cell = StandardisedCell(actor.cell, obs_size)  # type: ignore[assignment]


def clipped_double_q(q1: Tensor, q2: Tensor, pessimism: Tensor) -> Tensor:
    """TD3's clipped double Q on a value VECTOR (ours: per signal): q1, q2 (B, n) two critics' values, pessimism
    (n,) +1 where the actors want the signal up (main, ">=") → the min of the two, −1 where they want it down
    ("<=") → the max; returns (B, n)."""
    return pessimism * torch.minimum(pessimism * q1, pessimism * q2)


def smoothed_action(
    action: Tensor,
    half_width: Tensor,
    sigma: float,
    clip: float,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TD3's target policy smoothing: action (B, d) + ε, ε ~ N(0, (σ·w)²) clipped to ± clip·w per dimension
    (w = half_width (d,)), the result clipped to [low, high] (d,): the shared `target_policy_smoothing` in
    units of w, as ddpg.py applies it."""
    scaled = target_policy_smoothing(action / half_width, sigma, clip, low / half_width, high / half_width, generator)
    return scaled * half_width


def _start_at(actor: MessageActor, weights: Sequence[float], exact: bool = False) -> None:
    """Set the last layer so μ ≈ `weights` for any input: bias = atanh of the box position, small weights.

    `exact` (the warm start at an incumbent constant, ours): the last layer's weights are zeroed, so
    μ(o, h) = `weights` for every observation and message (a bound `START_BOUND_MARGIN` of the half-width
    inside; the default start keeps 3 % of the width, where tanh's slope is larger)."""
    last = actor.policy.body[-1]
    assert isinstance(last, nn.Linear)
    span = actor.policy.high - actor.policy.low
    pos = (torch.as_tensor(weights, dtype=torch.float32) - actor.policy.low) / span
    x = (
        (2.0 * pos - 1.0).clamp(-1.0 + START_BOUND_MARGIN, 1.0 - START_BOUND_MARGIN)
        if exact
        else 2.0 * pos.clamp(0.03, 0.97) - 1.0
    )
    with torch.no_grad():
        last.bias.copy_(torch.atanh(x))
        last.weight.mul_(0.0 if exact else 0.01)


class ResidualStagePolicy(nn.Module):
    """Ours (`start_policy`): stage k's policy head as a learned, bounded deviation from a rule.

    μ_k([o; h]) = clip(rule(k, o) + bound · tanh(f([o; h])), low, high), f a ReLU MLP on the same input as the
    plain head (`DeterministicActor`), its last layer zeroed so that μ_k = rule(k, o) exactly at the start, on
    every observation and message. The rule is numpy and gets no gradient (the actor loss moves f only). It is
    a drop-in for `MessageActor.policy` (same input, same output, `obs_size` of the input); it does not export
    to ONNX (the rule is not a torch graph), so `export_for_serving` refuses a module that has one.
    """

    low: Tensor
    high: Tensor

    def __init__(
        self,
        rule: StartPolicy,
        stage: int,
        obs_size: int,
        message_size: int,
        action_size: int,
        hidden: Sequence[int],
        bound: float,
        low: Tensor,
        high: Tensor,
    ) -> None:
        super().__init__()
        if bound <= 0:
            raise ValueError(f"ResidualStagePolicy: bound must be > 0, got {bound}")
        self.rule, self.stage, self.bound = rule, stage, bound
        self.local_size = obs_size
        self.obs_size, self.action_size = obs_size + message_size, action_size
        self.body = _mlp(self.obs_size, action_size, hidden)
        last = self.body[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def centre(self, obs: Tensor) -> Tensor:
        """rule(k, o) (B, d) on the local observations o (B, O): the start, and what f deviates from."""
        weights = self.rule(self.stage, obs.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(weights, np.float32), dtype=obs.dtype, device=obs.device)

    def forward(self, x: Tensor) -> Tensor:
        deviation = self.bound * torch.tanh(self.body(x))
        return torch.clamp(self.centre(x[..., : self.local_size]) + deviation, self.low, self.high)


class CentralCritic(nn.Module):
    """Q(k, h, o_k, a_k) → (B, n_signals): one network for every stage (stage one-hot), one head per signal."""

    def __init__(self, obs_size: int, action_size: int, message_size: int, n_signals: int, hidden: Sequence[int]):
        super().__init__()
        self.body = _mlp(N_STAGES + message_size + obs_size + action_size, n_signals, hidden)

    def forward(self, stage: Tensor, message: Tensor, obs: Tensor, action: Tensor) -> Tensor:
        one_hot = F.one_hot(stage, N_STAGES).to(obs.dtype)
        out: Tensor = self.body(torch.cat([one_hot, message, obs, action], dim=-1))
        return out


class MARDPG(nn.Module):
    """The stage actors, the centralised critic, their targets and the losses on replayed requests.

    A replay item is one request of one row: state (B, S) the message state at the request's start,
    obs (B, 3, O) and action (B, 3, d) of the three stages (the played, noisy actions), reward (B, n)
    scaled, discount (B, n), reset (B,) 1 where the message restarts after the request (a session or
    the user's horizon ended), next_obs (B, O) pre-rank's observation of the next request.
    """

    box_low: Tensor
    box_high: Tensor
    mix_horizon: Tensor
    pessimism: Tensor
    target_noise_half_width: Tensor

    def __init__(self, task: TaskSpec, cfg: MARDPGConfig, start_policy: StartPolicy | None = None) -> None:
        super().__init__()
        if len(task.agents) != N_STAGES or not isinstance(task.action, BoxAction):
            raise ValueError(
                f"ma_rdpg needs the rank cascade's multi-agent task (3 box agents), got agents "
                f"{[a.name for a in task.agents]}"
            )
        torch.manual_seed(cfg.seed)
        self.cfg, self.task = cfg, task
        agent = task.agents[0]
        self.obs_size, self.action_size = agent.obs_size, agent.action_size
        box = task.action
        # the joint box's first agent's share (the stages' boxes are the same, [0, 1] per weight)
        low = box.low if isinstance(box.low, float | int) else box.low[: self.action_size]
        high = box.high if isinstance(box.high, float | int) else box.high[: self.action_size]
        # The full box: the played (noisy) actions are clipped to it and σ is a fraction of its half-width.
        self.register_buffer(
            "box_low", torch.as_tensor(low, dtype=torch.float32).expand(self.action_size).clone(), persistent=False
        )
        self.register_buffer(
            "box_high", torch.as_tensor(high, dtype=torch.float32).expand(self.action_size).clone(), persistent=False
        )
        if cfg.start_action and len(cfg.start_action) != N_STAGES * self.action_size:
            raise ValueError(
                f"MARDPGConfig.start_action: {len(cfg.start_action)} values, the joint action has "
                f"{N_STAGES * self.action_size}"
            )
        starts = [
            torch.as_tensor(cfg.start_action[k * self.action_size : (k + 1) * self.action_size], dtype=torch.float32)
            for k in range(N_STAGES if cfg.start_action else 0)
        ]
        boxes = [(self.box_low, self.box_high)] * N_STAGES
        if starts and cfg.deviation_bound > 0:
            # DEPARTURE (ours): each stage's actor acts within start ± deviation_bound (`deviation_bound`).
            boxes = [
                (
                    torch.maximum(self.box_low, s - cfg.deviation_bound),
                    torch.minimum(self.box_high, s + cfg.deviation_bound),
                )
                for s in starts
            ]
        self.actors = nn.ModuleList(
            MessageActor(
                self.obs_size, self.action_size, cfg.hidden_sizes, lo.tolist(), hi.tolist(), cfg.message_size, cfg.cell
            )
            for lo, hi in boxes
        )
        if start_policy is not None and starts:
            raise ValueError("MARDPG: give start_action (a constant start) or start_policy (a rule), not both")
        self.has_start_policy = start_policy is not None
        if start_policy is not None:
            # Ours (`start_policy`): every stage plays the rule, deviating within ± deviation_bound (the full box
            # width when 0) — the bound `deviation_bound` puts around a constant start, around the rule instead.
            bound = cfg.deviation_bound if cfg.deviation_bound > 0 else float((self.box_high - self.box_low).max())
            for k, actor in enumerate(self.actors):
                actor.policy = ResidualStagePolicy(
                    start_policy,
                    k,
                    self.obs_size,
                    cfg.message_size,
                    self.action_size,
                    cfg.hidden_sizes,
                    bound,
                    self.box_low,
                    self.box_high,
                )
        elif starts:
            for actor, part in zip(self.actors, starts, strict=True):
                _start_at(actor, part.tolist(), exact=True)  # type: ignore[arg-type]
        elif cfg.init_at_default and task.name == RANK.name:
            for actor in self.actors:
                _start_at(actor, RANK_DEFAULT_STAGE_WEIGHTS)  # type: ignore[arg-type]
        self.critic_observation: nn.ModuleList | None = None
        """`obs_standardise`: stage k's statistics as the critics read o_k (`_q`: one set for every critic and
        target critic); each actor, target actor and best-feasible copy carries its own copy for export."""
        if cfg.obs_standardise:  # DEPARTURE (ours): `MARDPGConfig.obs_standardise`
            for actor in self.actors:
                standardise_stage_inputs(actor, self.obs_size)  # type: ignore[arg-type]
            self.critic_observation = nn.ModuleList(Standardise(self.obs_size) for _ in range(N_STAGES))
        self.state_size = self.actors[0].state_size
        n = len(task.signals)
        self.critic = CentralCritic(self.obs_size, self.action_size, cfg.message_size, n, cfg.hidden_sizes)
        self.target_actors = copy.deepcopy(self.actors).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # TD3's second critic (`twin_critics`, ours on MA-RDPG): its own initialisation, its own target.
        self.critic2: CentralCritic | None = None
        self.target_critic2: CentralCritic | None = None
        if cfg.twin_critics:
            self.critic2 = CentralCritic(self.obs_size, self.action_size, cfg.message_size, n, cfg.hidden_sizes)
            self.target_critic2 = copy.deepcopy(self.critic2).requires_grad_(False)
        # +1: the actors want the signal up (main, ">=", unconstrained) → min of the twins; −1 ("<=") → max.
        pessimism = torch.ones(n)
        for c, idx in zip(task.constraints, task.constrained_signals, strict=True):
            pessimism[idx] = task.constraint_sign(c)
        self.register_buffer("pessimism", pessimism, persistent=False)
        # w of the target smoothing per stage (`target_noise_box`): (3, d)
        self.register_buffer(
            "target_noise_half_width",
            torch.stack([self._half_width(a) for a in self.actors]),
            persistent=False,
        )
        # Q_mix weights: main, then ν_j s_j on each constrained signal (set by the controller).
        self.register_buffer("mix", torch.zeros(n))
        self.mix[0] = 1.0
        self.register_buffer("reward_scale", torch.ones(n))
        # Q_mix's per-signal horizon factor (1 − γ_i)/(1 − γ_main) with `per_request_mix`, else 1.
        gammas = _discounts(task, cfg)
        self.register_buffer(
            "mix_horizon",
            (1.0 - gammas) / (1.0 - gammas[0]) if cfg.per_request_mix else torch.ones(n),
            persistent=False,
        )
        self.best_actors = copy.deepcopy(self.actors).requires_grad_(False)
        self.register_buffer("has_best_feasible", torch.zeros((), dtype=torch.bool))
        self.holdout: dict[str, Any] = {}
        """What `holdout_users` judged (`_ship_on_holdout`); empty when off or no iterate was kept."""

    def _half_width(self, actor: nn.Module) -> Tensor:
        """(d,) the half-width `target_noise` scales to: the actor's own box, or the full action box."""
        full = (self.box_high - self.box_low) / 2.0
        if self.cfg.target_noise_box == "action":
            return full
        policy = actor.policy
        if isinstance(policy, ResidualStagePolicy):
            return torch.full_like(full, policy.bound)
        assert isinstance(policy, nn.Module)
        low, high = policy.low, policy.high
        assert isinstance(low, Tensor) and isinstance(high, Tensor)
        return (high - low) / 2.0

    @torch.no_grad()
    def fit_observation_statistics(self, observations: Sequence[Tensor]) -> None:
        """`obs_standardise`: fix stage k's statistics from `observations[k]` (rows, O) in every network that
        reads o_k — the critics (`critic_observation`), the stage's actor and message cell, and their copies
        (the target actors and the best-feasible actors: built as copies before any data, so they get the
        same statistics here; Polyak averaging then leaves equal statistics equal)."""
        if self.critic_observation is None:
            raise ValueError("fit_observation_statistics: needs MARDPGConfig.obs_standardise=True")
        if len(observations) != N_STAGES:
            raise ValueError(f"fit_observation_statistics: one observation batch per stage ({N_STAGES}) expected")
        for k, obs in enumerate(observations):
            fitted = self.critic_observation[k]
            assert isinstance(fitted, Standardise)
            fitted.fit(obs)
            for actors in (self.actors, self.target_actors, self.best_actors):
                for layer in actors[k].modules():
                    if isinstance(layer, Standardise):
                        layer.load_state_dict(fitted.state_dict())

    def message(self, state: Tensor) -> Tensor:
        h = state[..., : self.cfg.message_size]
        return h if self.cfg.message else torch.zeros_like(h)

    def set_multipliers(self, multipliers: np.ndarray) -> None:
        mix = torch.zeros_like(self.mix)
        mix[0] = 1.0
        for nu, c, idx in zip(multipliers, self.task.constraints, self.task.constrained_signals, strict=True):
            mix[idx] = float(nu) * self.task.constraint_sign(c)
        self.mix.copy_(mix * self.mix_horizon / (1.0 + float(np.sum(multipliers))))

    def messages(self, actors: nn.ModuleList, batch: dict[str, Tensor]) -> list[Tensor]:
        """The message states h_0 (the request's start), h_1, h_2 read by the three stages and h_3 handed to
        the next request (zeroed where it restarts), through `actors`' cells with the played actions."""
        states = [batch["state"]]
        for k, actor in enumerate(actors):
            states.append(message_update(actor, batch["obs"][:, k], batch["action"][:, k], states[-1]))
        states[-1] = states[-1] * (1.0 - batch["reset"])[:, None]
        return states

    def _q(self, critic: nn.Module, k: int, state: Tensor, obs: Tensor, action: Tensor) -> Tensor:
        stage = torch.full((obs.shape[0],), k, dtype=torch.long)
        if self.critic_observation is not None:  # `obs_standardise` (ours)
            obs = self.critic_observation[k](obs)
        out: Tensor = critic(stage, self.message(state), obs, action)
        return out

    def critic_loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Σ_k mean (Q(k, h_k, o_k, a_k) − y_k)²: stage k hands over to k + 1 (discount 1, no reward);
        re-rank to the next request's pre-rank (the page's reward, discount γ_i or 0). With `twin_critics` both
        critics' losses on the one clipped target; `generator` draws `target_noise`'s ε."""
        h = self.messages(self.actors, batch)  # with gradient: the critic's loss trains the message cells
        with torch.no_grad():
            h_target = self.messages(self.target_actors, batch)
            targets = []
            for k in range(N_STAGES):
                last = k == N_STAGES - 1
                o2 = batch["next_obs"] if last else batch["obs"][:, k + 1]
                k2 = 0 if last else k + 1
                h2 = h_target[k + 1]
                a2 = self.target_actors[k2].policy(torch.cat([o2, self.message(h2)], dim=-1))
                if self.cfg.target_noise > 0:  # TD3 §5.3 (ours on MA-RDPG): target policy smoothing
                    a2 = smoothed_action(
                        a2,
                        self.target_noise_half_width[k2],
                        self.cfg.target_noise,
                        self.cfg.target_noise_clip,
                        self.box_low,
                        self.box_high,
                        generator,
                    )
                q2 = self._q(self.target_critic, k2, h2, o2, a2)
                if self.target_critic2 is not None:  # TD3 §4.2 (ours on MA-RDPG): clipped double Q per signal
                    q2 = clipped_double_q(q2, self._q(self.target_critic2, k2, h2, o2, a2), self.pessimism)
                targets.append(batch["reward"] + batch["discount"] * q2 if last else q2)
        critics = [self.critic] if self.critic2 is None else [self.critic, self.critic2]
        losses, q_main = [], None
        for k in range(N_STAGES):
            for j, critic in enumerate(critics):
                q = self._q(critic, k, h[k], batch["obs"][:, k], batch["action"][:, k])
                losses.append(F.mse_loss(q, targets[k]))
                q_main = q[:, 0].mean().detach() if k == 0 and j == 0 else q_main
        assert q_main is not None
        return {"critic_loss": sum(losses, torch.zeros(())), "q_main": q_main}

    def actor_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """−Σ_k Q_mix(k, h_k, o_k, μ_k(o_k, h_k)) on the messages of the played actions (fixed here: the
        actors' policy heads learn to read the message, the critic's loss learns what it carries)."""
        with torch.no_grad():
            h = self.messages(self.actors, batch)
        total = torch.zeros(())
        for k, actor in enumerate(self.actors):
            o = batch["obs"][:, k]
            a = actor.policy(torch.cat([o, self.message(h[k])], dim=-1))
            total = total - (self._q(self.critic, k, h[k], o, a) @ self.mix).mean()
        return {"actor_loss": total}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The actors' policy heads (actor loss); the critic and the message cells (critic loss)."""
        heads = [p for a in self.actors for p in a.policy.parameters()]
        cells = [p for a in self.actors for p in a.cell.parameters()]
        critics = [*self.critic.parameters(), *(self.critic2.parameters() if self.critic2 is not None else [])]
        return {"actor": heads, "critic": [*critics, *cells]}

    def update_targets(self) -> None:
        soft_update(self.target_actors, self.actors, self.cfg.tau)
        soft_update(self.target_critic, self.critic, self.cfg.tau)
        if self.critic2 is not None and self.target_critic2 is not None:
            soft_update(self.target_critic2, self.critic2, self.cfg.tau)

    def export_for_serving(self, out_dir: Path) -> dict[str, Any]:
        """Per-stage ONNX with the message in and out, and model.onnx (`export_for_serving` below)."""
        return export_for_serving(self, out_dir)

    def shipped_actors(self) -> nn.ModuleList:
        """The best feasible iterate when one was found, else the last iterate."""
        return self.best_actors if bool(self.has_best_feasible) else self.actors


# ---------------------------------------------------------------- collect and learn


def _discounts(task: TaskSpec, cfg: MARDPGConfig) -> Tensor:
    gammas = cfg.discounts if cfg.discounts is not None else task.discounts
    if len(gammas) != len(task.signals):
        raise ValueError(f"MARDPGConfig.discounts: {len(task.signals)} values expected (one per signal), got {gammas}")
    return torch.as_tensor(gammas, dtype=torch.float32)


def gradient_step(
    module: MARDPG,
    batch: dict[str, Tensor],
    critic_opt: torch.optim.Optimizer,
    actor_opt: torch.optim.Optimizer,
    step: int,
    actors_learn: bool,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Critic step number `step` (1, 2, …) on `batch`; on every `policy_delay`-th also the actors' step (when
    `actors_learn`, i.e. past `actor_starts`) and the targets' Polyak move (TD3's delayed policy updates, ours on
    MA-RDPG; `policy_delay` 1: both after every critic step, as before). Returns the losses computed."""
    out = module.critic_loss(batch, generator)
    critic_opt.zero_grad(set_to_none=True)
    out["critic_loss"].backward()
    critic_opt.step()
    if step % module.cfg.policy_delay == 0:
        if actors_learn:
            out.update(module.actor_loss(batch))
            actor_opt.zero_grad(set_to_none=True)
            out["actor_loss"].backward()
            actor_opt.step()
        module.update_targets()
    return out


class SessionStateNoise:
    """`exploration: "session_state"` (ours, issue 18 nineteenth round). DEPARTURE from the paper's per-step
    noise: per row and stage k a standard-normal matrix E_k (d, m+1), redrawn when the row's session restarts
    (as the message state), and at every request the noise σ ⊙ (E_k · u(o_k)) with the UNIT vector
        u(o) = [√(1 − ρ); √ρ · ô/|ô|]        (u = [1; 0] when ô = 0)
    ô: o standardised per column. Why: in this world a weight's value is long-run (sessions, next-day returns,
    γ 0.99); noise redrawn per request shows the critic one-request deviations whose long-run effect is buried
    (rank_quality NOTES, third round: t ≈ 1 per request, ≈ 9 with one offset held per episode), so its ∂Q/∂a
    follows the short-run trade. A unit u keeps every request's marginal N(0, σ²) exactly; only the
    correlation over a session changes, (1 − ρ) + ρ·cos(ô_t, ô_t').

    The standardisation is FIXED after the first `stats_requests` requests (the run's first iteration; until
    then the pooled statistics of the observations seen so far), then never moves with the policy. Not the
    first request alone: there every row is at a session's start, so the recent rates, the session depth and
    the session signals (the fatigue and sociability columns) are the same on every row. A column whose std is
    below `STD_FLOOR` is constant: weight 0."""

    STD_FLOOR = 1e-3

    def __init__(
        self, n: int, action_size: int, obs_size: int, share: float, stats_requests: int, generator: torch.Generator
    ) -> None:
        self.share, self.stats_requests, self.generator = share, stats_requests, generator
        self.matrices = [torch.randn(n, action_size, obs_size + 1, generator=generator) for _ in range(N_STAGES)]
        self.seen = [0] * N_STAGES  # requests whose observations entered stage k's statistics
        self.sums = [torch.zeros(2, obs_size, dtype=torch.float64) for _ in range(N_STAGES)]
        self.mean = [torch.zeros(obs_size) for _ in range(N_STAGES)]
        self.inverse_std = [torch.zeros(obs_size) for _ in range(N_STAGES)]

    def _update_statistics(self, k: int, obs: Tensor) -> None:
        x = obs.double()
        self.sums[k] += torch.stack([x.sum(0), (x * x).sum(0)])
        self.seen[k] += 1
        count = self.seen[k] * obs.shape[0]
        mean = self.sums[k][0] / count
        std = (self.sums[k][1] / count - mean**2).clamp_min(0.0).sqrt()
        self.mean[k] = mean.float()
        self.inverse_std[k] = torch.where(std >= self.STD_FLOOR, 1.0 / std.clamp_min(self.STD_FLOOR), 0.0).float()

    def __call__(self, k: int, obs: Tensor, noise_std: Tensor) -> Tensor:
        """Stage k's noise (N, d) for its observations obs (N, m)."""
        if self.seen[k] < self.stats_requests:
            self._update_statistics(k, obs)
        standardised = (obs - self.mean[k]) * self.inverse_std[k]
        norm = standardised.norm(dim=-1, keepdim=True)
        has_state = norm > 1e-6
        held = torch.where(has_state, math.sqrt(1.0 - self.share), 1.0)
        state_part = torch.where(has_state, math.sqrt(self.share) * standardised / norm.clamp_min(1e-6), 0.0)
        u = torch.cat([held, state_part], dim=-1)
        return noise_std * torch.einsum("ndm,nm->nd", self.matrices[k], u)

    def restart(self, rows: Tensor) -> None:
        """New matrices for the rows whose session restarts (rows: (N,) bool)."""
        count = int(rows.sum())
        if count:
            for matrix in self.matrices:
                matrix[rows] = torch.randn(count, *matrix.shape[1:], generator=self.generator)


def choose_on_holdout(task: TaskSpec, judged: Sequence[tuple[float, np.ndarray]], margin: float) -> int:
    """Index of the candidate to ship from its held-out (main value, constrained values): the most main
    value among those meeting every constraint with the relative `margin` (ours, `holdout_users`); if none
    does, the one whose worst relative violation is smallest (the closest to feasible)."""
    thresholds = [c.threshold for c in task.constraints]
    senses = [task.constraint_sign(c) for c in task.constraints]
    worst = [float(np.max(relative_violations(v.tolist(), thresholds, senses))) for _, v in judged]
    feasible = [i for i, w in enumerate(worst) if w <= -margin]
    if feasible:
        return max(feasible, key=lambda i: judged[i][0])
    return int(np.argmin(worst))


def train(
    cfg: MARDPGConfig,
    task: TaskSpec,
    sim: Any,
    requests: int,
    per_iteration: int,
    on_log: Callable[[dict[str, float]], None] | None = None,
    judge: Judge | None = None,
    start_policy: StartPolicy | None = None,
) -> MARDPG:
    """`requests` requests of every row of `sim` (a reset `BatchedRankSim`, or anything with its sequential
    interface: n, stage_observation, run_stage, serve_page); a metrics row and a multiplier update every
    `per_iteration` requests. `judge`: held-out users for `cfg.holdout_users` (required when it is > 0).
    `start_policy` (ours, off by default): the stage actors start at this rule and learn bounded deviations
    from it (`ResidualStagePolicy`; module docstring)."""
    if cfg.holdout_users > 0 and judge is None:
        raise ValueError("MARDPGConfig.holdout_users > 0: train needs a judge on held-out users (fit builds one)")
    if cfg.actor_starts >= requests:
        raise ValueError(
            f"MARDPGConfig.actor_starts: {cfg.actor_starts} requests, but the run has only {requests} "
            f"(iterations × rollout_steps): the actors would never train — lower actor_starts or run longer"
        )
    module = MARDPG(task, cfg, start_policy)
    groups = module.parameter_groups()
    actor_opt = torch.optim.Adam(groups["actor"], lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(groups["critic"], lr=cfg.critic_lr)
    if cfg.initial_multipliers and len(cfg.initial_multipliers) != len(task.constraints):
        raise ValueError(
            f"MARDPGConfig.initial_multipliers: one ν per constraint of task {task.name!r} "
            f"({[c.signal for c in task.constraints]}), got {list(cfg.initial_multipliers)}"
        )
    initial = np.asarray(cfg.initial_multipliers, np.float64) if cfg.initial_multipliers else None
    controller = ConstraintController(task, cfg.pid_config(), cfg.best_feasible_window, cfg.margin, initial)
    if initial is not None:
        module.set_multipliers(initial)
    gammas = _discounts(task, cfg)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    target_generator = torch.Generator().manual_seed(cfg.seed + 2)  # `target_noise`'s ε (TD3's smoothing)
    critic_steps = 0
    replay = ReplayBuffer(cfg.buffer_capacity, cfg.seed)
    n, names = sim.n, task.signal_names
    actors: Sequence[MessageActor] = list(module.actors)  # type: ignore[arg-type]
    low, high = module.box_low, module.box_high
    noise_std = cfg.exploration_std * (high - low) / 2.0
    session_noise = (
        SessionStateNoise(n, module.action_size, module.obs_size, cfg.state_noise_share, per_iteration, generator)
        if cfg.exploration == "session_state"
        else None
    )
    # `obs_standardise` (ours): the statistics come from the first iteration's observations, fitted before any
    # gradient step (the first one waits for the fit); the actors play the same actions until then (identity).
    fit_at = min(per_iteration, requests) if cfg.obs_standardise else 0
    learn_from = max(cfg.learning_starts, fit_at)
    first_observations: list[list[Tensor]] = [[] for _ in range(N_STAGES)]
    state = torch.zeros(n, module.state_size)
    obs = torch.as_tensor(sim.stage_observation(0, None))
    window_rewards: list[np.ndarray] = []
    losses: list[dict[str, Tensor]] = []
    played: dict[str, Tensor] = {}  # the actors' state before this iteration's updates: the one that started it
    # (iteration, actors' state) of the tracker's latest kept iterates: the candidates `holdout_users` judges
    candidates: deque[tuple[int, dict[str, Tensor]]] = deque(maxlen=cfg.holdout_candidates)
    iterations = -(-requests // per_iteration)
    k = cfg.holdout_candidates
    spread_at = {-(-(j + 1) * iterations // k) - 1 for j in range(k)} if cfg.holdout_spread else set()
    spread: list[tuple[int, dict[str, Tensor]]] = []
    started = time.monotonic()
    for request in range(requests):
        if request % per_iteration == 0:
            played = {k: v.detach().clone() for k, v in module.actors.state_dict().items()}
        start_state, observations, actions, positions = state, [], [], None
        for k in range(N_STAGES):
            with torch.no_grad():
                mean = actors[k].policy(torch.cat([obs, module.message(state)], dim=-1))
                if session_noise is None:
                    noise = torch.randn(mean.shape, generator=generator) * noise_std
                else:
                    noise = session_noise(k, obs, noise_std)
                action = torch.clamp(mean + noise, low, high)
                state = message_update(actors[k], obs, action, state)
            positions = sim.run_stage(k, action.numpy(), positions)
            observations.append(obs)
            actions.append(action)
            if k < N_STAGES - 1:
                obs = torch.as_tensor(sim.stage_observation(k + 1, positions))
        _, rewards, done, info = sim.serve_page(positions)
        r = np.stack([np.asarray(rewards[s], np.float32) for s in names], axis=1)
        window_rewards.append(r[info["active"]])
        restart = torch.as_tensor(np.asarray(done, bool) | np.asarray(info["session_end"], bool))
        state = state * (~restart)[:, None].float()
        if session_noise is not None:
            session_noise.restart(restart)
        obs = torch.as_tensor(sim.stage_observation(0, None))
        terminal = torch.as_tensor(np.asarray(done, bool))[:, None].float()
        replay.add(
            {
                "state": start_state,
                "obs": torch.stack(observations, dim=1),
                "action": torch.stack(actions, dim=1),
                "reward": torch.as_tensor(r),
                "discount": gammas * (1.0 - terminal),
                "reset": restart.float(),
                "next_obs": obs,
            }
        )
        if request + 1 == cfg.learning_starts:
            # Reward scales from the warm-up requests (ours): every signal's Q on a comparable scale.
            warm = torch.as_tensor(np.concatenate(window_rewards))
            module.reward_scale.copy_(1.0 / warm.abs().mean(0).clamp_min(1e-6))
        if request < fit_at:
            for k, o in enumerate(observations):
                first_observations[k].append(o.clone())  # the simulator may reuse its arrays
            if request + 1 == fit_at:
                module.fit_observation_statistics([torch.cat(seen) for seen in first_observations])
        if request + 1 >= learn_from:
            for _ in range(cfg.updates_per_request):
                batch = replay.sample(cfg.batch_size)
                batch["reward"] = batch["reward"] * module.reward_scale
                critic_steps += 1
                actors_learn = request + 1 >= cfg.actor_starts
                out = gradient_step(module, batch, critic_opt, actor_opt, critic_steps, actors_learn, target_generator)
                losses.append({k: v.detach() for k, v in out.items()})
        if (request + 1) % per_iteration == 0 or request + 1 == requests:
            means = np.concatenate(window_rewards).mean(0) if window_rewards else np.zeros(len(names))
            values = means[list(task.constrained_signals)]
            if controller.iteration in spread_at:
                spread.append((controller.iteration, played))
            multipliers, metrics, improved = controller.step(values, float(means[0]), played)
            if cfg.hold_multipliers:  # DEPARTURE (ours): a fixed penalty, the PID's output unused
                assert initial is not None
                multipliers = initial.copy()
                metrics.update(
                    {f"charts/multiplier_{c.signal}": float(m) for c, m in zip(task.constraints, initial, strict=True)}
                )
            if request + 1 >= cfg.learning_starts:
                module.set_multipliers(multipliers)
            if improved and controller.tracker.best is not None:
                module.best_actors.load_state_dict(controller.tracker.best.state)
                module.has_best_feasible.fill_(True)
                candidates.append((controller.tracker.best.iteration, controller.tracker.best.state))
            row = {
                "requests": float(request + 1),
                "env_steps": float((request + 1) * n),
                "steps_per_s": (request + 1) * n / max(time.monotonic() - started, 1e-9),
                **{f"per_request_{s}": float(v) for s, v in zip(names, means, strict=True)},
                **metrics,
            }
            for key in ("critic_loss", "actor_loss", "q_main"):
                vals = [w[key] for w in losses if key in w]
                if vals:
                    row[key] = float(torch.stack(vals).mean())
            if on_log is not None:
                on_log(row)
            window_rewards, losses = [], []
    if cfg.holdout_spread and candidates:  # the tracker's kept iterate joins the spread snapshots
        spread = sorted(dict([*spread, candidates[-1]]).items())
    pool = spread if cfg.holdout_spread else list(candidates)
    if cfg.holdout_users > 0 and pool:
        assert judge is not None
        module.holdout = _ship_on_holdout(module, task, cfg, pool, judge)
    return module


def _ship_on_holdout(
    module: MARDPG, task: TaskSpec, cfg: MARDPGConfig, candidates: list[tuple[int, dict[str, Tensor]]], judge: Judge
) -> dict[str, Any]:
    """Judge every candidate state on the held-out users, load the chosen one into `best_actors`; returns
    what was judged (iterations, main values, constrained values, the chosen iteration) for the caller."""
    actors = copy.deepcopy(module.best_actors)
    judged = []
    for _, state in candidates:
        actors.load_state_dict(state)
        main, values = judge(list(actors))  # type: ignore[arg-type]
        judged.append((float(main), np.asarray(values, np.float64)))
    chosen = choose_on_holdout(task, judged, cfg.margin)
    module.best_actors.load_state_dict(candidates[chosen][1])
    return {
        "iterations": [it for it, _ in candidates],
        "main": [m for m, _ in judged],
        "constrained": [v.tolist() for _, v in judged],
        "chosen": candidates[chosen][0],
    }


# ---------------------------------------------------------------- sequential evaluation


def message_policy(
    actors: Sequence[MessageActor], message: bool = True
) -> Callable[[int, np.ndarray, np.ndarray], tuple[Any, Any]]:
    """A stage policy for `training.rl.sim.evaluate_sequential`: (stage, obs, state) → (weights, next state).
    `message=False` (the no-communication ablation) hands every stage a zero message."""

    def policy(stage: int, obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            h = torch.as_tensor(state) if message else torch.zeros(state.shape)
            a, s = actors[stage](torch.as_tensor(obs), h)
        return a.numpy(), s.numpy()

    return policy


# ---------------------------------------------------------------- export


def export_stage(actor: MessageActor, path: Path) -> float:
    """ONNX of one stage: inputs "observation" (B, O), "message" (B, S) → outputs "action" (B, d),
    "next_message" (B, S); parity over 3 chained steps ≤ 1e-5. Returns max |torch − onnxruntime|."""
    from training.rl.recurrent import export_recurrent_step

    return export_recurrent_step(
        actor.cpu().eval(),
        [actor.policy.obs_size - actor.message_size, actor.state_size],
        ("observation", "message"),
        ("action", "next_message"),
        path,
    )


SERVING_OUTPUTS = ("action_mean", "action_log_std", "next_message")


class ServingStage(nn.Module):
    """One stage in serving's contract: (observation, message) → (action_mean, action_log_std, next_message).

    action_mean is the deterministic action μ(o, h); action_log_std the training exploration σ (constant),
    so serving's Gaussian exploration logs a density of the same family; the state is the last output."""

    def __init__(self, actor: MessageActor, log_std: Tensor) -> None:
        super().__init__()
        self.actor = actor
        self.register_buffer("log_std", log_std)

    def forward(self, observation: Tensor, message: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        action, state = self.actor(observation, message)
        return action, self.log_std.expand_as(action), state


class ServingCascade(nn.Module):
    """Every stage on the same observation, the message chained stage to stage, actions concatenated: the
    registry's model.onnx (serving's joint path; the per-stage files are what a per-agent rank policy runs)."""

    def __init__(self, stages: Sequence[ServingStage]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, observation: Tensor, message: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        means, stds = [], []
        for stage in self.stages:
            mean, log_std, message = stage(observation, message)
            means.append(mean)
            stds.append(log_std)
        return torch.cat(means, dim=-1), torch.cat(stds, dim=-1), message


def export_for_serving(module: MARDPG, out_dir: Path) -> dict[str, Any]:
    """`<stage>.onnx` per stage (the shipped actors) and model.onnx, each with the message as the extra
    input and output, parity-checked over chained steps; returns {file name: ExportedFile} for
    `training.export.register_policy`."""
    from models.registry import TensorSpec
    from training.export import ExportedFile
    from training.rl.recurrent import export_recurrent_step

    if module.has_start_policy:
        raise ValueError("MA-RDPG with a start_policy (a numpy rule inside the actors) does not export to ONNX")
    actors: Sequence[MessageActor] = list(module.shipped_actors())  # type: ignore[arg-type]
    half_width = (module.box_high - module.box_low) / 2.0
    log_std = torch.log(torch.clamp(module.cfg.exploration_std * half_width, min=1e-3))
    stages = [ServingStage(copy.deepcopy(a), log_std) for a in actors]
    obs, state = module.obs_size, module.state_size
    inputs = [TensorSpec(name="observation", shape=["batch", obs]), TensorSpec(name="message", shape=["batch", state])]
    files: dict[str, Any] = {}
    for name, net, width in [
        *[(f"{agent.name}.onnx", s, module.action_size) for agent, s in zip(module.task.agents, stages, strict=True)],
        ("model.onnx", ServingCascade(stages), module.action_size * N_STAGES),
    ]:
        path = out_dir / name
        diff = export_recurrent_step(net, [obs, state], ("observation", "message"), SERVING_OUTPUTS, path)
        outputs = [
            TensorSpec(name="action_mean", shape=["batch", width]),
            TensorSpec(name="action_log_std", shape=["batch", width]),
            TensorSpec(name="next_message", shape=["batch", state]),
        ]
        files[name] = ExportedFile(path, inputs, outputs, diff)
    return files


# ---------------------------------------------------------------- registry


def fit(task: TaskSpec, source: Any, cfg: MARDPGConfig, run_cfg: RunConfig) -> RunResult:
    """The generic `train`'s entry: iterations × rollout_steps requests of run.n_envs simulator rows."""
    from training.rl.runtime import MetricsLogger, save_checkpoint
    from training.rl.trainer import OnlineSource, RunResult, default_out_dir

    if not isinstance(source, OnlineSource):
        raise ValueError("ma_rdpg learns online in the rank simulator's sequential view; got logged transitions")
    if task.name != RANK.name:
        raise ValueError(f"ma_rdpg: the rank cascade's task is needed, got {task.name!r}")
    torch.set_num_threads(run_cfg.cpu_threads)
    cfg = replace(cfg, seed=run_cfg.seed)
    pool = source.make_pool(run_cfg.n_envs, run_cfg.seed)
    pool.reset(run_cfg.seed)
    sim = pool.sim
    out_dir = Path(run_cfg.out_dir) if run_cfg.out_dir else default_out_dir(task.name, "ma_rdpg")
    logger = MetricsLogger(out_dir, tensorboard=run_cfg.tensorboard, plots=run_cfg.plots)
    history: list[dict[str, float]] = []

    def on_log(row: dict[str, float]) -> None:
        metrics = {k if k.startswith("charts/") else f"losses/{k}": v for k, v in row.items()}
        metrics["charts/env_steps"] = row["env_steps"]
        metrics[f"charts/episode_return_{task.main_signal}"] = math.nan
        logger.log(len(history), metrics)
        history.append({"iteration": float(len(history)), **metrics})

    judge = _holdout_judge(task, pool, run_cfg.seed, cfg.holdout_users, cfg.message) if cfg.holdout_users > 0 else None
    started = time.monotonic()
    try:
        module = train(cfg, task, sim, run_cfg.iterations * run_cfg.rollout_steps, run_cfg.rollout_steps, on_log, judge)
    finally:
        logger.close()
    save_checkpoint(out_dir / "checkpoint.safetensors", module.state_dict(), {"algorithm": "ma_rdpg"})
    return RunResult(
        learner=module,  # type: ignore[arg-type]
        history=history,
        out_dir=out_dir,
        transitions=run_cfg.iterations * run_cfg.rollout_steps * run_cfg.n_envs,
        seconds=time.monotonic() - started,
    )


def _holdout_judge(task: TaskSpec, pool: Any, seed: int, users: int, message: bool = True) -> Judge:
    """`holdout_users` fresh users of the training world: the pool's world (its `world_seed`; else the run
    seed's, as `BatchedSimPool.reset` builds it) and simulator options, users from HOLDOUT_USER_SEED + seed,
    judged as the rank benchmark judges (`evaluate_sequential`, common random numbers: every candidate
    meets the same users and luck)."""
    from training.rl.sim import evaluate_sequential

    world = pool.world_seed if getattr(pool, "world_seed", None) is not None else seed
    overrides = dict(getattr(pool, "overrides", {}))

    def judge(actors: Sequence[MessageActor]) -> tuple[float, np.ndarray]:
        policy = message_policy(actors, message=message)
        r = evaluate_sequential(
            policy,
            actors[0].state_size,
            users,
            HOLDOUT_DAYS,
            seed=world,
            user_seed=HOLDOUT_USER_SEED + seed,
            **overrides,
        )
        values = [r["per_decision"][c.signal] for c in task.constraints]
        return float(r["per_user_day"][task.main_signal].mean()), np.asarray(values, np.float64)

    return judge


register_algorithm(AlgorithmSpec("ma_rdpg", MARDPGConfig, loss=None, multi_agent=True, data="online", fit=fit))
