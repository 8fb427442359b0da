"""Ship the average of a window of iterates, not one iterate of it (ours; issue 14).

Why. `BestFeasibleTracker` judges a window of W consecutive iterates by the mean of
their W measured main values and slacks, then ships the window's last iterate. The
means are estimates for the *mixture* of those iterates, not for any one of them:
for discounted occupancy measures d_k, the values of every signal are linear in d,
so the policy whose occupancy is the average (1/W) Σ_k d_k has exactly the average
values (1/W) Σ_k J(π_k) — the quantity the tracker measured. That policy is

    π̄(a|s) = Σ_k d_k(s) π_k(a|s) / Σ_k d_k(s)

(Altman 1999, ch. 3: the policy read off an occupancy measure reproduces it). On
a constrained problem whose optimum mixes two actions in a state, the iterates
of a Lagrangian method hover around it on either side; their average sits
between them, and the tracker's feasibility test now applies to what ships.

How, for any actor (not only tabular). Each batch k contributes its visited states
S_k (d_k's samples) and a frozen copy of the actor π_k that collected it. π̄ is the
minimiser over the actor family of

    Σ_k Σ_{s ∈ S_k} KL(π_k(·|s) ‖ π̄(·|s)),

whose exact minimiser for a tabular categorical π̄ is the formula above (the forward
KL's minimiser over a free distribution is the visit-weighted mixture); for a
Gaussian-family actor it is the closest member of the family (moment matching).
`distil_window` fits it by Adam steps from the window's newest iterate.
Families without an exact KL (`distributions.kl` raises) fall back to the
cross-entropy on actions sampled from π_k, whose minimiser is the same mixture.

Pieces: `IterateWindow` (the last W snapshots: actor state + a subsample of the
batch's states) and `distil_window(student, snapshots, ...)`.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.rl.distributions import kl
from training.rl.losses import LossConfig
from training.rl.networks import Actor


@dataclass(frozen=True)
class IterateSnapshot:
    """One batch's iterate: the actor's parameters and a subsample of the states it was measured on."""

    state: dict[str, Tensor]
    obs: Tensor


class IterateWindow:
    """The last `size` iterates with their states (a ring buffer the tracker's window mirrors)."""

    def __init__(self, size: int, rows: int, seed: int = 0) -> None:
        if size < 1 or rows < 1:
            raise ValueError(f"IterateWindow: size and rows must be >= 1, got {size}, {rows}")
        self.rows = rows
        self.snapshots: deque[IterateSnapshot] = deque(maxlen=size)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def record(self, actor: nn.Module, obs: Tensor) -> None:
        """Snapshot `actor` (the iterate that collected `obs`) and up to `rows` of its states, drawn uniformly."""
        if len(obs) > self.rows:
            obs = obs[torch.randperm(len(obs), generator=self.generator)[: self.rows].to(obs.device)]
        state = {k: v.detach().clone() for k, v in actor.state_dict().items()}
        self.snapshots.append(IterateSnapshot(state, obs.detach().clone()))

    def contents(self) -> tuple[IterateSnapshot, ...]:
        """The window now, oldest first (snapshots are immutable, so the tuple can be kept)."""
        return tuple(self.snapshots)


def distil_window(
    student: Actor, snapshots: tuple[IterateSnapshot, ...], steps: int = 300, lr: float = 0.01, seed: int = 0
) -> list[float]:
    """Fit `student` in place to the visit-weighted mixture of the snapshots' policies (module docstring).

    The student starts from the newest snapshot (close to the mixture, so few steps are needed).
    Every step uses every snapshot's states, so each iterate weighs by the number of its states,
    as in the tracker's per-batch mean. Returns the loss per step (Σ KL / rows; its floor is the
    mixture's mean divergence from the iterates, not 0).
    """
    if not snapshots:
        raise ValueError("distil_window: no snapshots")
    student.load_state_dict(snapshots[-1].state)
    teachers = []
    for snap in snapshots:
        teacher = copy.deepcopy(student).requires_grad_(False)
        teacher.load_state_dict(snap.state)
        teachers.append(teacher)
    params = [p for p in student.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    rows = sum(len(s.obs) for s in snapshots)
    losses = []
    for _ in range(steps):
        total = torch.zeros(())
        for teacher, snap in zip(teachers, snapshots, strict=True):
            total = total + _divergence(teacher, student, snap.obs, generator).sum()
        loss = total / rows
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def average_weights(snapshots: tuple[IterateSnapshot, ...]) -> dict[str, Tensor]:
    """The parameter-wise mean of the snapshots' actor states (ours for SL-MGAC; as stochastic weight averaging,
    Izmailov et al. 2018): one network near the iterates' centre in weight space. Unlike `distil_window` it is not
    the iterates' mixture; consecutive iterates of a small step size are close, so it acts like their centre."""
    if not snapshots:
        raise ValueError("average_weights: no snapshots")
    states = [snap.state for snap in snapshots]
    return {key: torch.stack([s[key].float() for s in states]).mean(0).to(states[0][key].dtype) for key in states[0]}


def _divergence(teacher: Actor, student: Actor, obs: Tensor, generator: torch.Generator) -> Tensor:
    """KL(teacher ‖ student) per state; the sampled cross-entropy where the family has no exact KL."""
    with torch.no_grad():
        p = teacher.distribution(obs)
    try:
        return kl(p, student.distribution(obs))
    except TypeError:
        with torch.no_grad():
            action, _ = teacher.sample(obs, generator)
        return -student.log_prob(obs, action)


SHIP_MODES = ("iterate", "window_average")


@dataclass(frozen=True)
class BestFeasibleConfig(LossConfig):
    """What RCPO and TSCAC share about the iterate they ship: the `BestFeasibleTracker`'s window, recency
    and start (training.rl.lagrangian) and `ShippedPolicy`'s mode (plus the shared `LossConfig` fields)."""

    best_feasible_window: int = 10
    """Batches whose measured slacks and main value are averaged to judge an iterate (noise)."""
    best_feasible_recency: float = 0.0
    """Ours: a later feasible iterate replaces the kept one when its windowed main value is within this
    relative distance of the best seen (`BestFeasibleTracker.recency`); 0 = strictly higher wins."""
    best_feasible_start: int = 0
    """First batch whose iterate may be shipped as the best feasible one (ours; `BestFeasibleTracker.start`)."""
    best_feasible_ship: str = "iterate"
    """"iterate": ship the kept iterate (the window's last); "window_average" (ours): ship the average of the
    kept window's iterates, the policy the window's measurements describe (module docstring)."""
    window_average_rows: int = 512
    """States kept per batch for fitting the window average (the batch's visited states, drawn uniformly)."""
    window_average_steps: int = 300
    """Adam steps (at `actor_lr`) that fit the window average into the shipped actor when training ends."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.best_feasible_window < 1:
            raise ValueError(f"best_feasible_window: must be >= 1, got {self.best_feasible_window}")
        if not 0 <= self.best_feasible_recency < 1:
            raise ValueError(f"best_feasible_recency: must be in [0, 1), got {self.best_feasible_recency}")
        if self.best_feasible_start < 0:
            raise ValueError(f"best_feasible_start: must be >= 0, got {self.best_feasible_start}")
        if self.best_feasible_ship not in SHIP_MODES:
            raise ValueError(f"best_feasible_ship: one of {SHIP_MODES}, got {self.best_feasible_ship!r}")
        if self.window_average_rows < 1 or self.window_average_steps < 1:
            raise ValueError("window_average_rows and window_average_steps: must be >= 1")


class ShippedPolicy:
    """What a constrained loss ships from its `BestFeasibleTracker`: the kept iterate or its window's average.

    `candidate(actor, obs)` is what the loss offers the tracker for the batch `actor` collected:
    the actor's state ("iterate") or the window of snapshots ending with it ("window_average").
    `newest_state(kept)` is the actor state to hold until training ends; `finish(best_actor, kept)`
    fits the window average into `best_actor` ("window_average"; a no-op for "iterate").
    """

    def __init__(self, mode: str, window: int, rows: int = 512, steps: int = 300, lr: float = 0.01) -> None:
        if mode not in SHIP_MODES:
            raise ValueError(f"best_feasible_ship: one of {SHIP_MODES}, got {mode!r}")
        if steps < 1:
            raise ValueError(f"window_average_steps: must be >= 1, got {steps}")
        self.mode, self.steps, self.lr = mode, steps, lr
        self.window = IterateWindow(window, rows) if mode == "window_average" else None

    @classmethod
    def from_config(cls, cfg: BestFeasibleConfig) -> ShippedPolicy:
        """From a constrained loss's config (RCPOConfig, TSCACConfig)."""
        return cls(
            cfg.best_feasible_ship,
            cfg.best_feasible_window,
            cfg.window_average_rows,
            cfg.window_average_steps,
            cfg.actor_lr,
        )

    def candidate(self, actor: Actor, obs: Tensor) -> object:
        if self.window is None:
            return actor.state_dict()
        self.window.record(actor, obs)
        return self.window.contents()

    def newest_state(self, kept: object) -> dict[str, Tensor]:
        if self.window is None:
            return kept  # type: ignore[return-value]
        return kept[-1].state  # type: ignore[index,no-any-return]

    def finish(self, best_actor: Actor, kept: object) -> dict[str, float]:
        if self.window is None:
            return {}
        losses = distil_window(best_actor, kept, steps=self.steps, lr=self.lr)  # type: ignore[arg-type]
        best_actor.requires_grad_(False)
        return {"losses/window_average_kl": losses[-1]}
