"""Lagrange multipliers that settle, and the best feasible iterate: the constrained-RL pieces RCPO and TSCAC share.

* `PIDLagrangian` — the PID multiplier of Stooke, Achiam & Abbeel, "Responsive
  Safety in Reinforcement Learning by PID Lagrangian Methods" (ICML 2020),
  Algorithm 2. Plain dual ascent (RCPO's ν ← max(0, ν + η·violation)) is the
  pure-integral case K_P = K_D = 0; it lags the policy and makes the multiplier
  and the policy swing around the constraint. The proportional term reacts to
  the violation now and damps the swing; the derivative term reacts to the
  violation growing. Per constraint i, once per iteration, with Δ_i the
  measured violation (> 0 when violated):
      I_i ← clip(I_i + Δ_i, 0, I_max)                    integral, anti-windup
      P_i = EMA_α(Δ_i)                                   proportional, smoothed
      D_i = max(0, EMA_α(Δ_i) − EMA_α(Δ_i) one step ago)  derivative, only on rising violation
      λ_i = clip(K_P P_i + K_I I_i + K_D D_i, 0, λ_max)
  Deviations (ours): the paper's Δ is cost − limit in the signal's units; here
  the caller passes a violation already divided by |threshold| (`relative_violations`), so one set of
  gains fits signals of any scale. Anti-windup: the paper clips I at 0 only;
  we also cap it at I_max = λ_max / K_I, so a long infeasible stretch cannot
  build an integral that takes as long to unwind. The derivative acts on the
  smoothed violation (the paper differentiates the smoothed cost — the same
  thing, the threshold being constant).
* `BestFeasibleTracker` — keeps the best iterate that meets every constraint
  (ours; the papers ship the last iterate). Measured slacks and main values
  are noisy, so an iterate is scored by the mean of the last `window`
  measurements (the policy moves little between consecutive iterations), and
  counts as feasible when every mean slack ≥ −tolerance *and* every slack of
  its own batch does too: a window averages several iterates, and while the
  policy drifts towards violation the window's mean still holds when its last
  (the kept) iterate no longer does. Among feasible iterates the highest mean
  main value wins; its state is deep-copied. Iterates before `start` (ours,
  `best_feasible_start`) are measured into the window but never kept: the first
  batches are not yet measured under the policy's own state distribution (every
  env starts from ρ0; on the tabular CMDPs the tracker kept such early iterates,
  feasible but 27 % below the optimum, while the last iterate was 4 % below), and
  the multiplier has not settled yet.
* `ConstraintController` — what RCPO and TSCAC hold: measured values →
  relative violations → PID multipliers, and the tracker fed with the actor that
  collected the batch. `measured_constraint_values(loss, batch)` reads a batch.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.rl.task import TaskSpec

if TYPE_CHECKING:
    from training.rl.data import TransitionBatch
    from training.rl.losses import LossModule


def relative_violations(values: Sequence[float], thresholds: Sequence[float], signs: Sequence[float]) -> np.ndarray:
    """Violation of each constraint relative to its threshold: sign·(threshold − value)/|threshold|, > 0 = violated.

    `signs` is +1 for a ">=" constraint and −1 for "<=" (`TaskSpec.constraint_sign`); a
    threshold of 0 is treated as 1 (absolute violation).
    """
    v, t, s = (np.asarray(x, dtype=np.float64) for x in (values, thresholds, signs))
    if not v.shape == t.shape == s.shape:
        raise ValueError(
            f"relative_violations: values, thresholds and signs need one entry each, got {v.shape, t.shape, s.shape}"
        )
    scale = np.where(np.abs(t) > 1e-12, np.abs(t), 1.0)
    return s * (t - v) / scale


@dataclass(frozen=True)
class PIDLagrangianConfig:
    """Gains and limits of the PID multiplier (module docstring). Units: λ per unit of relative violation."""

    kp: float = 1.0
    """K_P: proportional gain."""
    ki: float = 0.5
    """K_I: integral gain (plain dual ascent's learning rate η when kp = kd = 0)."""
    kd: float = 0.0
    """K_D: derivative gain (on rising violation only)."""
    smoothing: float = 0.1
    """α of the EMA of the violation used by the P and D terms; 1 = no smoothing."""
    max_multiplier: float = 100.0
    """λ_max: upper cap of every multiplier (and, through I_max = λ_max / K_I, the anti-windup limit)."""
    initial_multiplier: float = 0.0
    """λ at the start (the integral starts at initial_multiplier / K_I)."""

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd"):
            if getattr(self, name) < 0:
                raise ValueError(f"PIDLagrangianConfig.{name}: must be >= 0, got {getattr(self, name)}")
        if self.kp == self.ki == self.kd == 0:
            raise ValueError("PIDLagrangianConfig: at least one of kp, ki, kd must be > 0")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"PIDLagrangianConfig.smoothing: must be in (0, 1], got {self.smoothing}")
        if self.max_multiplier <= 0:
            raise ValueError(f"PIDLagrangianConfig.max_multiplier: must be > 0, got {self.max_multiplier}")
        if not 0 <= self.initial_multiplier <= self.max_multiplier:
            raise ValueError(
                f"PIDLagrangianConfig.initial_multiplier: must be in [0, max_multiplier], got {self.initial_multiplier}"
            )


class PIDLagrangian:
    """One PID-controlled multiplier λ_i ≥ 0 per constraint; `update(violations)` once per iteration."""

    def __init__(
        self, n_constraints: int, cfg: PIDLagrangianConfig | None = None, initial: Sequence[float] | None = None
    ) -> None:
        """`initial`: λ_i at the start per constraint, overriding `cfg.initial_multiplier`."""
        if n_constraints < 1:
            raise ValueError(f"PIDLagrangian: n_constraints must be >= 1, got {n_constraints}")
        self.cfg = cfg or PIDLagrangianConfig()
        self.n_constraints = n_constraints
        start = np.full(n_constraints, self.cfg.initial_multiplier, dtype=np.float64)
        if initial is not None:
            start = np.asarray(initial, dtype=np.float64)
            if start.shape != (n_constraints,) or (start < 0).any() or (start > self.cfg.max_multiplier).any():
                raise ValueError(
                    f"PIDLagrangian.initial: expected {n_constraints} values in [0, {self.cfg.max_multiplier}], got {start}"
                )
        self.integral = start / self.cfg.ki if self.cfg.ki > 0 else np.zeros(n_constraints)
        self.smoothed: np.ndarray | None = None  # EMA of the violation; None before the first update
        self.multipliers = start.copy()

    @property
    def integral_limit(self) -> float:
        return self.cfg.max_multiplier / self.cfg.ki if self.cfg.ki > 0 else 0.0

    def update(self, violations: Sequence[float]) -> np.ndarray:
        """Fold in this iteration's violations (> 0 = violated, one per constraint); returns the new λ."""
        delta = np.asarray(violations, dtype=np.float64)
        if delta.shape != (self.n_constraints,):
            raise ValueError(f"PIDLagrangian.update: expected {self.n_constraints} violations, got shape {delta.shape}")
        if not np.isfinite(delta).all():
            raise ValueError(f"PIDLagrangian.update: violations must be finite, got {delta}")
        cfg = self.cfg
        self.integral = np.clip(self.integral + delta, 0.0, self.integral_limit)
        previous = self.smoothed
        self.smoothed = delta if previous is None else (1 - cfg.smoothing) * previous + cfg.smoothing * delta
        derivative = np.zeros_like(delta) if previous is None else np.maximum(0.0, self.smoothed - previous)
        raw = cfg.kp * self.smoothed + cfg.ki * self.integral + cfg.kd * derivative
        self.multipliers = np.clip(raw, 0.0, cfg.max_multiplier)
        return self.multipliers.copy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "integral": self.integral.copy(),
            "smoothed": None if self.smoothed is None else self.smoothed.copy(),
            "multipliers": self.multipliers.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.integral = np.asarray(state["integral"], dtype=np.float64).copy()
        self.smoothed = None if state["smoothed"] is None else np.asarray(state["smoothed"], dtype=np.float64).copy()
        self.multipliers = np.asarray(state["multipliers"], dtype=np.float64).copy()


@dataclass
class FeasibleIterate:
    """What `BestFeasibleTracker` keeps: the iteration, its scores and a deep copy of the state."""

    iteration: int
    main_value: float
    slacks: np.ndarray
    state: Any = field(repr=False)


class BestFeasibleTracker:
    """The best iterate (by windowed mean main value) whose windowed mean slacks and own slacks are all ≥ −tolerance."""

    def __init__(self, window: int = 1, tolerance: float = 0.0, recency: float = 0.0, start: int = 0) -> None:
        """`recency` (ours): a later feasible window replaces the kept one when its mean main value is
        at least best − recency·|best|, not only when it is higher. The measured main value is a noisy,
        rollout-weighted proxy of the discounted return: a strict "higher wins" keeps early iterates
        whose batch happened to score high, while the policy keeps converging afterwards (issue 14,
        RCPO's shipped iterate was further from the optimum than its last one). 0 = strict.
        `start` (ours): the first iteration that may be kept (module docstring)."""
        if window < 1:
            raise ValueError(f"BestFeasibleTracker.window: must be >= 1, got {window}")
        if tolerance < 0:
            raise ValueError(f"BestFeasibleTracker.tolerance: must be >= 0, got {tolerance}")
        if not 0 <= recency < 1:
            raise ValueError(f"BestFeasibleTracker.recency: must be in [0, 1), got {recency}")
        if start < 0:
            raise ValueError(f"BestFeasibleTracker.start: must be >= 0, got {start}")
        self.window, self.tolerance, self.recency, self.start = window, tolerance, recency, start
        self._mains: deque[float] = deque(maxlen=window)
        self._slacks: deque[np.ndarray] = deque(maxlen=window)
        self.best: FeasibleIterate | None = None
        self.peak_main = float("-inf")
        """Highest windowed mean main value of any feasible window judged so far."""

    def offer(self, iteration: int, main_value: float, slacks: Sequence[float], state: Any) -> bool:
        """Record one iteration's measurements of the policy `state` was collected with; True if it is the new best.

        `slacks` are signed so that ≥ 0 means satisfied (`constraint_report`'s slack), one per
        constraint. Only a full window is judged, and only from iteration `start` on. `state` is
        deep-copied only when it becomes the best.
        """
        self._mains.append(float(main_value))
        self._slacks.append(np.asarray(slacks, dtype=np.float64))
        if len(self._mains) < self.window or iteration < self.start:
            return False
        mean_main = float(np.mean(self._mains))
        mean_slacks = np.mean(np.stack(self._slacks), axis=0)
        if (mean_slacks < -self.tolerance).any() or (self._slacks[-1] < -self.tolerance).any():
            return False
        if self.best is not None:
            # The bar is read from the highest feasible mean seen (`peak_main`), not from the kept
            # iterate, so a chain of replacements cannot drift downwards.
            peak = self.peak_main
            if mean_main < peak - self.recency * abs(peak) or (self.recency == 0 and mean_main <= peak):
                return False
        self.peak_main = mean_main if self.best is None else max(self.peak_main, mean_main)
        self.best = FeasibleIterate(iteration, mean_main, mean_slacks, copy.deepcopy(state))
        return True


# ---------------------------------------------------------------------------
# What a constrained loss module holds: measured constraint values → multipliers, best feasible iterate
# ---------------------------------------------------------------------------
@torch.no_grad()
def measured_constraint_values(loss: LossModule, batch: TransitionBatch) -> np.ndarray:
    """Per-decision mean of every constrained signal under the loss's current actor, shape (k,).

    Online (the batch was collected by the current actor): the batch mean, over all ranks.
    Offline: the self-normalised importance-sampling estimate with clipped weights π/μ.
    """
    if loss.offline:
        log_ratio = loss.actor.log_prob(batch.obs, batch.action) - batch.behaviour_log_prob
        weights = loss.global_is(log_ratio, loss.cfg.is_clip)
        means = loss.dist.mean(batch.rewards * weights[:, None])
    else:
        means = loss.dist.mean(batch.rewards)
    return means[list(loss.task.constrained_signals)].double().cpu().numpy()


class ConstraintController:
    """PID multipliers on the measured relative violation, plus the best feasible iterate (module docstring).

    `step(values, main_value, actor_state)` once per batch: `values` are the constrained signals'
    measured per-decision means, `main_value` the main signal's, `actor_state` the state of the
    actor that produced them (kept by the tracker when it is the best feasible so far; None when
    the batch was not collected by the actor — offline — and the tracker is skipped).
    `margin` (ours) aims the controller that much inside every threshold (relative), so a policy
    jittering around its set point still meets the constraint. `best_feasible_start`: the first
    batch whose iterate may be kept (`BestFeasibleTracker.start`).
    """

    def __init__(
        self,
        task: TaskSpec,
        pid: PIDLagrangianConfig,
        window: int,
        margin: float,
        initial: Sequence[float] | None = None,
        recency: float = 0.0,
        best_feasible_start: int = 0,
    ) -> None:
        if not task.constraints:
            raise ValueError(f"task {task.name!r}: a constrained algorithm needs at least one constraint")
        if margin < 0:
            raise ValueError(f"margin: must be >= 0, got {margin}")
        self.task, self.margin = task, margin
        self.thresholds = np.array([c.threshold for c in task.constraints], dtype=np.float64)
        self.senses = np.array([task.constraint_sign(c) for c in task.constraints], dtype=np.float64)
        self.pid = PIDLagrangian(len(task.constraints), pid, initial)
        self.tracker = BestFeasibleTracker(window=window, recency=recency, start=best_feasible_start)
        self.iteration = 0

    def step(
        self, values: np.ndarray, main_value: float, actor_state: Any | None
    ) -> tuple[np.ndarray, dict[str, float], bool]:
        """(new multipliers, metrics, whether this iterate is the new best feasible one)."""
        violations = relative_violations(values, self.thresholds, self.senses)
        slacks = -violations * np.where(np.abs(self.thresholds) > 1e-12, np.abs(self.thresholds), 1.0)
        improved = actor_state is not None and self.tracker.offer(self.iteration, main_value, slacks, actor_state)
        multipliers = self.pid.update(violations + self.margin)
        self.iteration += 1
        metrics = {
            f"charts/multiplier_{c.signal}": float(m) for c, m in zip(self.task.constraints, multipliers, strict=True)
        }
        if self.tracker.best is not None:
            metrics["charts/best_feasible_iteration"] = float(self.tracker.best.iteration)
        return multipliers, metrics, improved
