"""TSCAC — Two-Stage Constrained Actor-Critic (Cai et al., WWW 2023, arXiv 2302.01680).

Constrained MDP: maximise the main signal's return (watch time) subject to each
constrained auxiliary signal staying on its side of a threshold.

Contents, top to bottom: `TSCACConfig`; networks (the shared actor and
`SignalCritics` from `training.rl.networks`, plus one stage-one actor per
constrained signal and — for discrete actions — a main-signal Q head); the loss
(`TSCACLoss.actor_loss`). Trained by the generic `training.rl.trainer.train("tscac", ...)`.

Algorithm (paper §4, PAPERS.md)
* Critics: one per signal i, each on its own TD error with its own γ_i
  (`LossModule` base class; GAE(λ) online, one-step TD with target critics offline).
* Stage one: for each constrained auxiliary signal i an actor π_θi maximising
  E[A_i log π_θi(a|s)] on its own advantage (sign flipped for a "<=" constraint).
* Stage two: max_π E_π[A_1] s.t. KL(π‖π_θi) ≤ ε_i has the closed form
      π*(a|s) ∝ Π_i π_θi(a|s)^{λ_i/Σλ} · exp(A_1(s,a)/Σλ),
  and the shipped actor minimises KL(π*‖π). The paper fixes λ (a hyperparameter
  swept offline); here λ is chosen so that the thresholds hold (below).
    - Discrete actions: computed exactly per state — log π* is the
      log-softmax of Σ_i (λ_i/Σλ) log π_θi(·|s) + A_1(s,·)/Σλ with A_1(s,·) =
      Q_1(s,·) − V_1(s) from a main-signal Q head, and the loss is the exact
      KL(π*‖π) summed over actions.
    - Box actors (tanh-Gaussian / Beta): KL(π*‖π) = −E_{π*}[log π] + const is estimated with the
      logged samples a ~ μ: E_{π*}[log π] = E_μ[(π*/μ) log π] and
          π*/μ ∝ Π_i (π_θi/μ)^{λ_i/Σλ} · exp(A_1/Σλ)
      (the exponents λ_i/Σλ add up to one, so μ divides through exactly).
      Multi-discrete actions (`allocate`, a factorised categorical actor) take
      this sampled path too (ours): the exact form would need A_1 over every
      joint action (384 for `allocate`), and KL(π*‖π) onto a factorised π only
      matches π*'s per-component marginals, which the logged samples estimate.
      The per-state normaliser of π* is unknown; the weights are shifted by
      their log-mean-exp over the minibatch, clipped at `is_clip` and
      self-normalised (DEPARTURE: one normaliser for the whole minibatch
      instead of one per state — exact when Z(s) varies little across states).
* Offline: μ is the logged propensity when the logs carry it (ours: the paper learns μ̂; a learned
  μ̂ fills only rows without one, or replaces all with `RunConfig.learn_behaviour`).

Choosing λ (ours; `lambda_control = "pid"`, the default). The paper fixes λ and never reads
the thresholds — only each constraint's direction — so a fixed λ lands wherever it lands:
near the max-auxiliary policy for a large λ, on main-only for a small one (issue 14).
Larger λ_i pulls π* towards π_θi, which raises signal i, so λ_i is driven by the measured
violation of constraint i like a Lagrange multiplier: once per batch
    Δ_i = s_i (C_i − Ĵ_i) / |C_i| + margin,   u_i = PID(Δ_i),   λ_i = λ_min · exp(u_i)
(`training.rl.lagrangian.PIDLagrangian`; u_i starts at log(λ_i⁰/λ_min), λ_i⁰ = `lam` /
`lambdas`). The exponential keeps λ > 0 (π* divides by Σλ) and lets one set of gains move
λ across the decades the paper sweeps (1e-1…1e-5): a violation of 10 % for one batch moves
λ by a factor exp(K_I · 0.1). `lambda_control = "fixed"` is the paper's fixed λ.
The shipped policy is the best feasible iterate (`best_actor`, as in RCPO: highest
main value among iterates whose measured slacks, averaged over `best_feasible_window`
batches, hold; the last iterate when none did). With `best_feasible_ship: window_average`
(ours, off by default) it is the average of the kept window's iterates, fitted when training
ends (`training.rl.policy_average`).
The paper's ε (the KL bound of stage two) is the constraint whose multiplier λ would be;
with λ set by the thresholds instead, ε has no role and is not a setting (it was validated
and never used). KL(π‖π_θi) is logged per batch (`charts/kl_stage_one_<signal>`).

Other departures, each marked in the code:
* Rewards, critics and advantages are in units of each signal's reward std,
  frozen at the first batch (`LossModule.reward_scales`), so λ is in units of "one std of
  the main signal" and fits signals of any scale (watch time in seconds,
  click rates ~0.1); the paper uses raw advantages and sweeps λ over
  1e-1…1e-5 instead. The scale is frozen, not per batch, so the stage-two
  target has a fixed point.
* Advantages online (configs/rank/tscac.yaml, section `online`: `advantage: episode_pairs`; ours):
  instead of per-step GAE from the critics, every step of an episode gets, per signal, half the
  difference between its episode's outcome and that of the antithetic partner episode (the same
  user and simulator randomness, exploration offset −σz instead of +σz; `LossConfig.advantage`),
  standardised per signal. The critics are still trained (TD(λ) targets) but the actors do not read
  them. Why: the long-run effect of the fusion weights on watch time per user-day is too weak
  against per-user noise for per-step advantages in the benchmark's budget; the two stages and
  the closed form are unchanged.
* Stage one: off-policy E_μ[w_i A_i log π_θi] with w_i = π_θi/μ clipped and
  self-normalised, plus an entropy bonus α·H(π_θi) (ours): without it a
  discrete π_θi becomes deterministic and the geometric mean in π* is
  dominated by it.
* With π_θi ∝ exp(A_i/α), π* ∝ exp((A_1 + Σ_i (λ_i/α) A_i)/Σλ): a soft-greedy policy on the
  Lagrangian with multipliers ν_i = λ_i/α at temperature Σλ. Issue 14 (tabular CMDPs, exact
  evaluation) showed three ways this fails with sampled data, each addressed here (all ours, all
  off by default, so rank, slot and allocate keep their behaviour; the CMDP benchmark turns them on):
    - Collapse and deadlock: at α = 0.1 π_θi and then π were deterministic within five
      batches; actions π no longer takes are never sampled, their A_1 is never measured again,
      and π stays on the first deterministic policy while λ moves (instance 0: gap 0.41 from
      batch 5 to 150, the same for the shipped and the last iterate).
      `temperature_halflife` / `temperature_floor` anneal α and every λ_i by one factor κ_t
      (ν_i unchanged, the temperature falls), and `min_action_prob` keeps κ_t · p_min on every
      action of the exact stage-two target, so early batches explore and late ones sharpen.
    - Noisy A_1: the Q head regressed on the λ-return learned Q ≈ V (≈ 20 reward stds) to a
      precision worse than the differences between actions (≈ 1 std) that π* exponentiates.
      `main_q_dueling` makes it an advantage head, Q_1 = V_1 (detached) + A_1, and
      `main_q_target: one_step` regresses it on r_1 + γ_1 V̄_1(s') instead of the λ-return.
    - Re-deriving π from one batch's noisy A_1 every batch: `stage_two_step` η < 1 makes the
      target π_old^(1−η) π*^η, a mirror-descent step whose fixed point is still π*.
    - Stage-one actors stuck on a wrong action (2026-12-05, instance 13 of the benchmark, exact
      advantages of the trained policy computed beside the actors): the sampled stage-one gradient
      E_μ[w_i A_i ∇log π_θi] with w_i = π_θi/μ vanishes on actions π_θi has nearly dropped, so a
      sharp π_θi kept an action whose exact A_i was below another's; and the geometric mean in π*
      reads π_θi's log-probabilities in its tails, which its fit constrains least, so π* stayed
      spread over actions no signal favoured (final gap 0.21, Lagrangian gap with the LP's duals
      0.2). `stage_one_exact` (discrete actions): one Q head per constrained signal beside the main
      one; each π_θi is fitted to the exact maximiser of its objective E_π[s_i A_i] + α H(π),
      softmax(s_i A_i(s, ·)/α), and stage two reads that log-softmax itself. Then
      π* ∝ exp((A_1 + Σ_i (λ_i/α) s_i A_i)/Σλ) exactly as the identity above says, and the η step
      makes the whole a mirror-descent (soft policy iteration) step on the Lagrangian.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.problems import DiscreteAction
from training.rl.action_values import action_value_loss, advantages_all_actions, exact_kl, floor_actions
from training.rl.data import TransitionBatch
from training.rl.distributions import kl
from training.rl.lagrangian import ConstraintController, PIDLagrangianConfig, measured_constraint_values
from training.rl.losses import LossModule, MiniBatch, ParamGroup, module_parameters
from training.rl.networks import Actor, CloneConfig, SignalCritics, make_actor
from training.rl.policy_average import BestFeasibleConfig, ShippedPolicy
from training.rl.registry import register


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TSCACConfig(BestFeasibleConfig):
    """TSCAC hyperparameters (plus the shared `BestFeasibleConfig` and `LossConfig` ones)."""

    lam: float = 1.0
    """λ of every constraint at the start (fixed with `lambda_control = "fixed"`) when `lambdas` is empty."""
    lambdas: tuple[float, ...] = ()
    """λ_i per constraint at the start, in the task's constraint order; empty = `lam` for all."""
    lambda_control: str = "pid"
    """"pid": λ_i follows the measured violation of constraint i (ours, module docstring); "fixed": the paper."""
    lambda_kp: float = 3.0
    """K_P of the controller of u_i = log(λ_i / λ_min), per unit of relative violation."""
    lambda_ki: float = 0.5
    """K_I of the same controller."""
    lambda_smoothing: float = 1.0
    """α of the violation's EMA that the P term reads (1 = the raw per-batch violation)."""
    min_lambda: float = 1e-3
    """λ_min: λ_i = λ_min · exp(u_i) never goes below it."""
    max_lambda: float = 1e3
    """λ_max: upper cap of every λ_i (and the controller's anti-windup limit)."""
    margin: float = 0.0
    """Relative margin the controller aims inside every threshold (0.01 = 1 % of the threshold)."""
    stage_one_entropy: float = 0.01
    """α: entropy bonus of the stage-one actors, so π_θi ∝ exp(A_i/α) stays a soft, bounded policy."""
    temperature_halflife: float = 0.0
    """Ours: batches over which α and every λ_i halve together (κ_t = 0.5^(t/h), module docstring); 0 = off."""
    temperature_floor: float = 1.0
    """Ours: the smallest κ_t the annealing reaches (1 = no annealing)."""
    stage_two_step: float = 1.0
    """η (ours, exact stage two): the target is π_η ∝ π_old^(1−η) · π*^η, π_old the actor that collected
    the batch — a mirror-descent step towards π* that averages A_1's noise over ~1/η batches;
    1 = the paper's projection onto π* itself. The fixed point is π* either way."""
    main_q_dueling: bool = False
    """Ours, exact stage two: the Q head holds A_1 and Q_1 = V_1 (detached) + A_1 (module docstring).
    Off by default: offline on the three-arm toy its rarely-weighted arms keep their random init."""
    main_q_target: str = "lambda_return"
    """Online regression target of the main-signal Q head (exact stage two): "lambda_return" (the critics'
    TD(λ) target) or "one_step" r_1 + γ_1 V̄_1(s') (ours; less noisy, but lags V̄ — on the three-arm toy
    it lands 0.64 instead of 0.70 main at 40 iterations). Offline always one-step."""
    min_action_prob: float = 0.0
    """Ours, exact (discrete) stage two only: every action keeps at least κ_t · this probability in the
    stage-two target, so actions the closed form drops are still sampled and their A_1 stays measured."""
    stage_one_exact: bool = False
    """Ours, discrete actions only: each stage-one actor is fitted to the exact maximiser of its
    entropy-regularised objective, softmax(s_i·A_i(s, ·)/α), with A_i(s, ·) for every action from a Q
    head per constrained signal (built like the main one: `main_q_dueling`, `main_q_target`), instead
    of the sampled off-policy gradient, which stalls on a near-deterministic wrong action (module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam <= 0:
            raise ValueError(f"lam: must be > 0, got {self.lam}")
        if any(v <= 0 for v in self.lambdas):
            raise ValueError(f"lambdas: every λ_i must be > 0, got {self.lambdas}")
        if self.stage_one_entropy < 0:
            raise ValueError(f"stage_one_entropy: must be >= 0, got {self.stage_one_entropy}")
        if self.lambda_control not in ("pid", "fixed"):
            raise ValueError(f"lambda_control: 'pid' or 'fixed', got {self.lambda_control!r}")
        if not 0 < self.min_lambda < self.max_lambda:
            raise ValueError(
                f"min_lambda, max_lambda: need 0 < min_lambda < max_lambda, got {self.min_lambda}, {self.max_lambda}"
            )
        if self.lambda_control == "pid" and not all(
            self.min_lambda <= v <= self.max_lambda for v in self.lambdas or (self.lam,)
        ):
            raise ValueError(
                f"lam / lambdas: the starting λ must lie in [min_lambda, max_lambda] = [{self.min_lambda}, {self.max_lambda}]"
            )
        if self.lambda_kp < 0 or self.lambda_ki < 0 or self.lambda_kp == self.lambda_ki == 0:
            raise ValueError(
                f"lambda_kp, lambda_ki: must be >= 0 and not both 0, got {self.lambda_kp}, {self.lambda_ki}"
            )
        if self.margin < 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")
        if self.temperature_halflife < 0:
            raise ValueError(f"temperature_halflife: must be >= 0 (0 = off), got {self.temperature_halflife}")
        if not 0 < self.stage_two_step <= 1:
            raise ValueError(f"stage_two_step: must be in (0, 1], got {self.stage_two_step}")
        if self.main_q_target not in ("one_step", "lambda_return"):
            raise ValueError(f"main_q_target: 'one_step' or 'lambda_return', got {self.main_q_target!r}")
        if not 0 <= self.min_action_prob < 0.5:
            raise ValueError(f"min_action_prob: must be in [0, 0.5), got {self.min_action_prob}")
        if not 0 < self.temperature_floor <= 1:
            raise ValueError(f"temperature_floor: must be in (0, 1], got {self.temperature_floor}")
        if self.stage_one_exact and self.stage_one_entropy <= 0:
            raise ValueError("stage_one_exact: needs stage_one_entropy > 0 (the target is softmax(A_i/α))")

    def temperature_scale(self, batches: int) -> float:
        """κ_t after `batches` batches: 0.5^(t/h), never below `temperature_floor`; 1 when annealing is off."""
        if self.temperature_halflife == 0:
            return 1.0
        return max(self.temperature_floor, 0.5 ** (batches / self.temperature_halflife))

    def controller_config(self) -> PIDLagrangianConfig:
        """The PID of u_i = log(λ_i/λ_min) (its starting values come from `lam` / `lambdas`)."""
        return PIDLagrangianConfig(
            kp=self.lambda_kp,
            ki=self.lambda_ki,
            smoothing=self.lambda_smoothing,
            max_multiplier=math.log(self.max_lambda / self.min_lambda),
        )


# ---------------------------------------------------------------------------
# Networks + loss
# ---------------------------------------------------------------------------
def mean_kl(p: Actor, q: Actor, obs: Tensor) -> Tensor:
    """Mean over states of KL(p(·|s) ‖ q(·|s)), exact for every actor family (`distributions.kl`)."""
    return kl(p.distribution(obs), q.distribution(obs)).mean()


@register("tscac", config=TSCACConfig)
class TSCACLoss(LossModule):
    """Stage-one actors per constraint + the stage-two (shipped) actor, trained together each minibatch."""

    cfg: TSCACConfig
    stage_one: nn.ModuleList
    main_q: SignalCritics
    fits_every_standardiser = True

    def build(self) -> None:
        task, cfg = self.task, self.cfg
        if not task.constraints:
            raise ValueError("TSCAC needs at least one constraint in the task (TaskSpec.constraints)")
        lambdas = cfg.lambdas or (cfg.lam,) * len(task.constraints)
        if len(lambdas) != len(task.constraints):
            raise ValueError(f"lambdas: {len(lambdas)} values for {len(task.constraints)} constraints")
        self.lambdas = tuple(float(v) for v in lambdas)
        self.base_lambdas = self.lambdas  # λ_i before the temperature scale κ_t
        self.batches_seen = 0
        self.temperature = 1.0  # κ_t (module docstring)
        # u_i = log(λ_i / λ_min) starts at λ_i⁰; the controller also keeps the best feasible iterate.
        start_u = [math.log(v / cfg.min_lambda) for v in self.lambdas] if cfg.lambda_control == "pid" else None
        self.controller = ConstraintController(
            task,
            cfg.controller_config(),
            cfg.best_feasible_window,
            cfg.margin,
            initial=start_u,
            recency=cfg.best_feasible_recency,
            best_feasible_start=cfg.best_feasible_start,
        )
        self.best_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.shipping = ShippedPolicy.from_config(cfg)
        self.register_buffer("has_best_feasible", torch.zeros((), dtype=torch.bool))
        self.register_buffer("lambda_values", torch.tensor(self.lambdas, dtype=torch.float32))
        self.stage_one = nn.ModuleList(
            make_actor(task, cfg.hidden, None, cfg.init_std, cfg.action_distribution, cfg.obs_standardise)
            for _ in task.constraints
        )
        for a in self.stage_one:
            a.load_state_dict(self.actor.state_dict())
        # The actor that collected the current batch (the stage-two step's π_old); refreshed per batch.
        self.previous_actor = copy.deepcopy(self.actor).requires_grad_(False)
        if cfg.stage_one_exact and not self.exact_stage_two:
            raise ValueError("stage_one_exact: needs one discrete action (the task's action is not DiscreteAction)")
        if self.exact_stage_two:
            # Exact stage two needs A_1(s, ·) for every action: a Q head for the main signal, and with
            # `stage_one_exact` one more per constrained signal (head k ↔ `q_head_signals[k]`).
            self.q_head_signals = (0, *task.constrained_signals) if cfg.stage_one_exact else (0,)
            self.main_q = SignalCritics(
                task.obs_size,
                len(self.q_head_signals),
                cfg.hidden,
                out_per_signal=task.nvec[0],
                standardise=cfg.obs_standardise,
            )

    @property
    def exact_stage_two(self) -> bool:
        """One discrete choice: π* is computed exactly over all actions; otherwise it is estimated from samples."""
        return isinstance(self.task.action, DiscreteAction)

    def parameter_groups(self) -> list[ParamGroup]:
        groups = super().parameter_groups()
        groups.append(ParamGroup("stage_one_actors", module_parameters(self.stage_one), self.cfg.actor_lr))
        if self.exact_stage_two:
            groups.append(ParamGroup("main_q", module_parameters([self.main_q]), self.cfg.critic_lr))
        return groups

    def policies(self) -> list[Actor]:
        return [self.actor, *self.stage_one]  # type: ignore[list-item]

    @property
    def lambda_sum(self) -> float:
        return float(sum(self.lambdas))

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
        self.previous_actor.load_state_dict(self.actor.state_dict())
        with torch.no_grad():
            obs = batch.obs[:2048]
            metrics = {
                f"charts/kl_stage_one_{c.signal}": float(mean_kl(self.actor, a, obs))
                for c, a in zip(self.task.constraints, self.stage_one, strict=True)
            }
        values = measured_constraint_values(self, batch)
        main_value = float(self.dist.mean(batch.rewards[:, :1]).item())
        # Online the batch was collected by the current actor: a candidate to ship. Offline it is the log.
        actor_state = None if self.offline else self.shipping.candidate(self.actor, batch.obs)
        u, control_metrics, improved = self.controller.step(values, main_value, actor_state)
        if improved and self.controller.tracker.best is not None:
            self.best_actor.load_state_dict(self.shipping.newest_state(self.controller.tracker.best.state))
            self.has_best_feasible.fill_(True)
        if self.cfg.lambda_control == "pid":
            # λ_i = λ_min · exp(u_i), u_i the PID output on constraint i's relative violation.
            self.base_lambdas = tuple(self.cfg.min_lambda * math.exp(float(v)) for v in u)
        # Temperature annealing (ours): α and every λ_i scaled by the same κ_t, so ν_i = λ_i/α is unchanged.
        self.temperature = self.cfg.temperature_scale(self.batches_seen)
        self.batches_seen += 1
        self.lambdas = tuple(self.temperature * v for v in self.base_lambdas)
        self.lambda_values.copy_(torch.tensor(self.lambdas, dtype=torch.float32))
        metrics["charts/temperature"] = self.temperature
        if "charts/best_feasible_iteration" in control_metrics:
            metrics["charts/best_feasible_iteration"] = control_metrics["charts/best_feasible_iteration"]
        for c, lam in zip(self.task.constraints, self.lambdas, strict=True):
            metrics[f"charts/lambda_{c.signal}"] = lam
        return metrics

    def fit_standardisers(self, obs: Tensor, action: Tensor) -> None:
        """Ours (`LossConfig.obs_standardise`): the base's networks (the actor, the stage-one actors, the critics),
        the copies of the actor (best feasible, collecting) and the Q heads of exact stage two, all on `obs`."""
        super().fit_standardisers(obs, action)
        for copy_of_actor in (self.best_actor, self.previous_actor):
            copy_of_actor.fit_standardiser(obs)
        if self.exact_stage_two:
            self.main_q.fit_standardiser(obs)

    def start_policy(self, obs: Tensor, actions: Tensor, clone: CloneConfig) -> float:
        """Ours (`training.rl.trainer.PolicyStart`): the shipped actor starts at a rule, and the stage-one actors,
        the best-feasible copy and the collecting actor π_old as copies of it, as `build` copies them."""
        error = self.actor.start_policy(obs, actions, clone)
        for copy_of_actor in (*self.stage_one, self.best_actor, self.previous_actor):
            copy_of_actor.load_state_dict(self.actor.state_dict())
        return error

    def on_train_end(self) -> dict[str, float]:
        """With `best_feasible_ship: window_average`, fit the kept window's average into `best_actor`."""
        best = self.controller.tracker.best
        return self.shipping.finish(self.best_actor, best.state) if best is not None else {}

    def shipped_actor(self) -> Actor:
        """The best feasible iterate when one was found (online), else the last iterate."""
        return self.best_actor if bool(self.has_best_feasible) else self.actor

    def extra_critic_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        if not self.exact_stage_two:
            return super().extra_critic_loss(mb)
        # Ours (`main_q_dueling`, `main_q_target: one_step`): training/rl/action_values.py says why.
        loss = action_value_loss(
            self.main_q,
            self.q_head_signals,
            self,
            mb,
            dueling=self.cfg.main_q_dueling,
            one_step=self.cfg.main_q_target == "one_step",
        )
        return loss, {"losses/critic_main_q": loss.item()}

    def advantages_all_actions(self, obs: Tensor) -> Tensor:
        """A_i(s, ·) = Q_i(s, ·) − V_i(s) of every Q head, shape (B, heads, n), head k ↔ signal
        `q_head_signals[k]` (discrete only; the heads' output when dueling)."""
        return advantages_all_actions(self.main_q, self.q_head_signals, self, obs, self.cfg.main_q_dueling)

    def main_advantage_all_actions(self, obs: Tensor) -> Tensor:
        """A_1(s, ·) = Q_1(s, ·) − V_1(s), shape (B, n) (discrete only; the head's output when dueling)."""
        return self.advantages_all_actions(obs)[:, 0]

    def exact_stage_one_targets(self, advantages: Tensor) -> list[Tensor]:
        """With `stage_one_exact` (ours): log softmax(s_i·A_i(s, ·)/α) per constrained signal, from
        `advantages_all_actions` — the exact maximiser of stage one's E_π[s_i·A_i] + α·H(π) in each state."""
        alpha = self.temperature * self.cfg.stage_one_entropy
        return [
            torch.log_softmax(self.task.constraint_sign(c) * advantages[:, 1 + k] / alpha, dim=-1)
            for k, c in enumerate(self.task.constraints)
        ]

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        metrics: dict[str, float] = {}
        adv = self.advantage_estimates(mb)  # in reward-std units (DEPARTURE: frozen scales, see Learner)
        loss = torch.zeros((), device=mb.obs.device)
        exact_targets = None
        if self.cfg.stage_one_exact:
            with torch.no_grad():
                exact_targets = self.exact_stage_one_targets(self.advantages_all_actions(mb.obs))
        # Stage one: each π_θi on its own signed advantage, off-policy: E_μ[w_i A_i log π_θi] + α H(π_θi);
        # with `stage_one_exact` (ours) KL(softmax(s_i·A_i/α) ‖ π_θi) over every action instead.
        for k, (c, idx, actor) in enumerate(
            zip(self.task.constraints, self.task.constrained_signals, self.stage_one, strict=True)
        ):
            if exact_targets is not None:
                l_i = exact_kl(exact_targets[k], actor(mb.obs))
                metrics[f"losses/stage_one_{c.signal}"] = l_i.item()
                loss = loss + l_i
                continue
            logp = actor.log_prob(mb.obs, mb.action)
            w = self.global_is(logp - mb.behaviour_log_prob, self.cfg.is_clip)
            a_i = self.task.constraint_sign(c) * adv[:, idx]
            alpha = self.temperature * self.cfg.stage_one_entropy
            l_i = -(w * a_i * logp).mean() - alpha * actor.entropy(mb.obs).mean()
            metrics[f"losses/stage_one_{c.signal}"] = l_i.item()
            loss = loss + l_i
        # Stage two: project the closed-form π* onto the shipped actor.
        l2 = self._stage_two_exact(mb) if self.exact_stage_two else self._stage_two_sampled(mb, adv)
        metrics["losses/stage_two"] = l2.item()
        return loss + l2, metrics

    def _stage_two_sampled(self, mb: MiniBatch, adv: Tensor) -> Tensor:
        """KL(π*‖π) estimated on the logged samples (Gaussian and multi-discrete actors; module docstring)."""
        with torch.no_grad():
            log_w = adv[:, 0] / self.lambda_sum
            for lam, actor in zip(self.lambdas, self.stage_one, strict=True):
                log_w = log_w + (lam / self.lambda_sum) * (actor.log_prob(mb.obs, mb.action) - mb.behaviour_log_prob)
            # DEPARTURE: one normaliser per minibatch instead of Z(s) per state.
            log_w = log_w - self.dist.log_mean_exp(log_w)
            w = self.global_is(log_w, self.cfg.is_clip)
        return -(w * self.actor.log_prob(mb.obs, mb.action)).mean()

    def _stage_two_exact(self, mb: MiniBatch) -> Tensor:
        """KL(π*‖π) summed over every action of one discrete choice."""
        with torch.no_grad():
            advantages = self.advantages_all_actions(mb.obs)
            logits = advantages[:, 0] / self.lambda_sum
            # With `stage_one_exact` (ours) the geometric mean reads the exact stage-one targets, not the
            # fitted actors: it weighs every action by their log-probabilities, tails included, and a
            # fitted actor's tails are what its KL fit constrains least.
            stage_one = (
                self.exact_stage_one_targets(advantages)
                if self.cfg.stage_one_exact
                else [actor(mb.obs) for actor in self.stage_one]
            )
            for lam, log_p in zip(self.lambdas, stage_one, strict=True):
                logits = logits + (lam / self.lambda_sum) * log_p
            log_target = torch.log_softmax(logits, dim=-1)
            eta = self.cfg.stage_two_step
            if eta < 1:  # ours: a mirror-descent step from the collecting actor (config docstring)
                log_target = torch.log_softmax((1 - eta) * self.previous_actor(mb.obs) + eta * log_target, dim=-1)
            # ours: a floor on every action (config docstring)
            log_target = floor_actions(log_target, self.temperature * self.cfg.min_action_prob)
        return exact_kl(log_target, self.actor(mb.obs))

    @torch.no_grad()
    def stage_one_distances(self, obs: Tensor) -> dict[str, float]:
        """Mean KL(π‖π_θi) per constrained signal (how far stage two sits from each stage-one policy)."""
        return {
            c.signal: float(mean_kl(self.actor, a, obs))
            for c, a in zip(self.task.constraints, self.stage_one, strict=True)
        }
