"""The constrained actor-critic skeleton every `rank` algorithm builds on.

A `Learner` owns an actor (the policy that ships), one critic per reward signal
(each with its own discount γ_i, TSCAC §critics), target copies of the critics,
and one Adam optimiser. `update(batch, rollout)` runs epochs of minibatch
steps. Algorithms override named hooks only:

* `build()`              — extra networks (stage-one actors, a Q head, a centralised critic)
* `actor_loss(mb)`       — the policy objective (the part that differs per algorithm)
* `extra_critic_loss(mb)`— losses of extra critics
* `advantage_estimates(mb)` — how per-signal advantages are formed (CTDE overrides it)
* `on_batch_start(...)`  — per-batch work (restart stage-one actors, dual ascent)

Advantages and critic targets
* online (a time-major `Rollout` is given): GAE(λ) per signal with the signal's
  own γ_i, critic target = TD(λ) return; computed once per batch.
* online with `advantage = "episode_pairs"` (ours, see `LearnerConfig.advantage`):
  the actor's advantage of every step is the paired difference of its episode's
  outcome against the antithetic partner episode; the transitions wait in an
  `EpisodePairBuffer` until both episodes of their pair have ended. Critic targets
  stay TD(λ), computed when the transitions were collected.
* offline (logged transitions): one-step TD with the target critics,
  y_i = r_i + γ_i (1 − done) V̄_i(s'), A_i = y_i − V_i(s), per minibatch; critic
  regression weighted by clipped self-normalised π/μ̂ (one-step correction —
  an approximation of the per-decision IS the sequential problem would need).

Distributed: every rank draws the same global minibatch (same generator) and
takes its own equal shard; normalisers (advantage moments, IS self-normalisation,
log-mean-exp shifts) are reduced over ranks, and DDP averages gradients, so two
processes compute what one process computes up to floating-point noise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from training.rl.data import Rollout, TransitionBatch
from training.rl.functional import gae, importance_weights, soft_update, td_targets
from training.rl.networks import Actor, CategoricalActor, SignalCritics, make_actor
from training.rl.runtime import Dist
from training.rl.task import TaskSpec


@dataclass(frozen=True)
class LearnerConfig:
    """Hyperparameters every learner shares."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of actors and critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor(s)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics."""
    gae_lambda: float = 0.95
    """λ of GAE / TD(λ) in online training."""
    tau: float = 0.01
    """Soft target-update rate τ of the critics' target copies (offline TD)."""
    is_clip: float = 10.0
    """Upper clip of importance weights before self-normalisation."""
    ppo_clip: float = 0.2
    """ε of the clipped policy-gradient surrogate (trust region around the data's policy)."""
    minibatch_size: int = 256
    """Rows per gradient step (the global minibatch; split over torchrun ranks)."""
    epochs: int = 4
    """Passes over each online rollout."""
    init_std: float = 0.1
    """Initial standard deviation of Gaussian actors."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    entropy_coef: float = 0.0
    """Entropy bonus of the shipped actor."""
    warm_start_steps: int = 300
    """Offline only: behaviour-cloning steps that start the actors at the logging policy."""
    episode_noise: bool = False
    """Online Gaussian actors: hold each environment row's exploration noise z ~ N(0, I) fixed until its
    episode ends (action = mean(s) + σ·z) instead of drawing it afresh per step. DEPARTURE from the
    papers' per-step sampling (ours, in the spirit of per-episode parameter-space exploration): on
    `rank` a weight's long-run effect (longer sessions, next-day returns) is invisible under per-step
    noise — one request barely moves them — but a whole user-episode played with the same offset
    shows it. Each step's marginal is still N(mean, σ²), so the stored log-probabilities are unchanged."""
    advantage: str = "gae"
    """Online advantage of the actor(s): "gae" (per step, per signal, from the critics) or
    "episode_pairs" — DEPARTURE from the papers (ours): environment rows come in antithetic,
    common-random-number pairs (rows 2k, 2k+1 simulate the same user with the same randomness,
    e.g. `RankConfig.paired_rows`) that play the episode offsets +σz and −σz (implies
    `episode_noise`); every step of an episode gets, per signal, half the difference between its
    episode's outcome and the partner episode's (`episode_pair_advantages`), standardised per
    signal over the batch. Why: on `rank` a fusion weight's effect on watch time per user-day is
    long-run (session length, next-day returns) and weak against the between-user and
    between-episode noise that per-step GAE advantages of a γ = 0.99 return carry; the paired
    difference cancels the user and the simulator's randomness (12× smaller spread of paired
    episode returns on `rank`). Outcome per signal: the main signal's undiscounted episode return
    (the finite-horizon objective), every other signal's per-decision mean over the episode (what
    the constraints bound). Single process only."""
    discounts: tuple[float, ...] = ()
    """γ per signal in the task's order (main first), overriding the task's (the problem spec's);
    empty = the task's. On `rank` the main signal's γ = 0.95 per request barely sees the next-day
    return the ground truth counts, so the shipped configs raise it (configs/rank/*.yaml)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive layer widths, got {self.hidden}")
        for name in ("actor_lr", "critic_lr", "is_clip", "ppo_clip", "init_std", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda: must be in [0, 1], got {self.gae_lambda}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        if self.minibatch_size < 2 or self.epochs < 1 or self.warm_start_steps < 0 or self.entropy_coef < 0:
            raise ValueError("minibatch_size >= 2, epochs >= 1, warm_start_steps >= 0 and entropy_coef >= 0 required")
        if any(not 0.0 <= g < 1.0 for g in self.discounts):
            raise ValueError(f"discounts: every γ must be in [0, 1), got {self.discounts}")
        if self.advantage not in ("gae", "episode_pairs"):
            raise ValueError(f"advantage: 'gae' or 'episode_pairs', got {self.advantage!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a mapping (a config file); unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; allowed: {sorted(known)}")
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**vals)


def episode_pair_advantages(outcomes: Tensor, rows: Tensor) -> Tensor:
    """Antithetic advantages of ended episode pairs: (V_self − V_partner) / 2 per signal.

    outcomes (E, m): one outcome per signal of each of E episodes; rows (E,): the env row each was
    played in, where rows 2k and 2k+1 are partners and the partner of outcome e is the outcome with
    row `rows[e] ^ 1` in the same position of the other half — callers pass the episodes of complete
    pairs as [e_0, e_0', e_1, e_1', …] (partners adjacent). Returns (E, m); each pair sums to zero.
    """
    if outcomes.shape[0] % 2 or outcomes.shape[0] != rows.shape[0]:
        raise ValueError(
            f"episode_pair_advantages: need partners adjacent, got {tuple(outcomes.shape)} / {tuple(rows.shape)}"
        )
    if not bool(((rows[0::2] ^ 1) == rows[1::2]).all()):
        raise ValueError("episode_pair_advantages: every even position's partner (row ^ 1) must follow it")
    half = (outcomes[0::2] - outcomes[1::2]) / 2.0
    return torch.stack([half, -half], dim=1).reshape(outcomes.shape)


class EpisodePairBuffer:
    """Online transitions of paired rows (`LearnerConfig.advantage = "episode_pairs"`), kept until both
    episodes of their pair have ended; episodes of rows 2k and 2k+1 pair by their index within the row.

    `add(rollout, targets)` appends a time-major rollout (T, N); `pop_ready()` returns the transitions
    of every complete pair with their advantages (`episode_pair_advantages`) and stored critic targets.
    """

    _KEY = 1 << 32

    def __init__(self, n_envs: int) -> None:
        if n_envs % 2:
            raise ValueError(f"episode_pairs: needs an even number of environment rows (pairs), got {n_envs}")
        self.n_envs = n_envs
        self.episode = torch.zeros(n_envs, dtype=torch.long)
        self.store: dict[str, Tensor] = {}

    def add(self, rollout: Rollout, targets: Tensor) -> None:
        t, n = rollout.obs.shape[:2]
        if n != self.n_envs:
            raise ValueError(f"EpisodePairBuffer: built for {self.n_envs} rows, got a rollout of {n}")
        ends = rollout.ends.cpu() > 0
        # Episode index of every step: the row's current one plus the episodes that ended before it.
        before = torch.cumsum(ends.long(), 0) - ends.long()
        episode = self.episode[None, :] + before
        self.episode += ends.long().sum(0)
        rows = torch.arange(n).expand(t, n)
        new = {
            "obs": rollout.obs.reshape(t * n, -1),
            "action": rollout.action.reshape(t * n, -1),
            "rewards": rollout.rewards.reshape(t * n, -1),
            "next_obs": rollout.next_obs.reshape(t * n, -1),
            "done": rollout.terminated.reshape(-1),
            "logp": rollout.behaviour_log_prob.reshape(-1),
            "targets": targets.reshape(t * n, -1),
            "key": (rows * self._KEY + episode).reshape(-1),
            "end": ends.reshape(-1),
        }
        dev = new["obs"].device
        new = {k: v.to(dev) for k, v in new.items()}
        self.store = new if not self.store else {k: torch.cat([self.store[k], v]) for k, v in new.items()}

    def pop_ready(self) -> tuple[TransitionBatch, Tensor, Tensor] | None:
        """(transitions, advantages (B, m), critic targets (B, m)) of every complete pair, or None."""
        if not self.store:
            return None
        key = self.store["key"]
        uniq, inverse = torch.unique(key, return_inverse=True)
        ended = torch.zeros(len(uniq), dtype=torch.bool, device=key.device)
        ended[inverse[self.store["end"]]] = True
        row, ep = uniq // self._KEY, uniq % self._KEY
        partner = (row ^ 1) * self._KEY + ep
        pos = torch.searchsorted(uniq, partner).clamp_max(len(uniq) - 1)
        has_partner = uniq[pos] == partner
        ready = ended & has_partner & ended[pos]
        if not bool(ready.any()):
            return None
        # Outcome per episode: main signal's sum, the others' per-decision mean.
        m = self.store["rewards"].shape[1]
        totals = torch.zeros(len(uniq), m, device=key.device).index_add_(0, inverse, self.store["rewards"])
        steps = torch.zeros(len(uniq), device=key.device).index_add_(
            0, inverse, torch.ones_like(key, dtype=torch.float32)
        )
        outcome = totals.clone()
        others = [i for i in range(m) if i != 0]
        outcome[:, others] = totals[:, others] / steps[:, None].clamp_min(1.0)
        # Complete pairs, partners adjacent: even rows first, their partners next.
        first = torch.nonzero(ready & (row % 2 == 0)).flatten()
        order = torch.stack([first, pos[first]], dim=1).reshape(-1)
        adv_episode = torch.zeros(len(uniq), m, device=key.device)
        adv_episode[order] = episode_pair_advantages(outcome[order], row[order])
        take = ready[inverse]
        keep = ~take
        out = {k: v[take] for k, v in self.store.items()}
        self.store = {k: v[keep] for k, v in self.store.items()}
        batch = TransitionBatch(out["obs"], out["action"], out["rewards"], out["next_obs"], out["done"], out["logp"])
        return batch, adv_episode[inverse[take]], out["targets"]


@dataclass
class MiniBatch:
    """One (shard of a) minibatch with everything the losses need; tensors (B, …)."""

    obs: Tensor
    action: Tensor
    rewards: Tensor
    next_obs: Tensor
    done: Tensor
    behaviour_log_prob: Tensor
    advantages: Tensor  # (B, m) raw per-signal advantages
    targets: Tensor  # (B, m) critic regression targets
    weights: Tensor  # (B,) IS weights π/μ for the critic (ones online)


class _LossModule(nn.Module):
    """Holds every trained module so one DDP wrapper syncs all their gradients."""

    def __init__(self, learner: Learner) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        return self.learner.total_loss(mb)


class Learner(nn.Module):
    """Actor + per-signal critics + hooks. Subclasses implement `actor_loss`."""

    uses_critics: bool = True
    algorithm: str = "learner"
    gammas: Tensor
    reward_scales: Tensor
    scales_frozen: Tensor
    critics: SignalCritics
    target_critics: SignalCritics

    def __init__(self, task: TaskSpec, cfg: LearnerConfig, init_mean: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.task, self.cfg = task, cfg
        self.dist: Dist | None = None
        self.offline = False
        self.actor: Actor = make_actor(task, cfg.hidden, init_mean, cfg.init_std)
        if cfg.discounts and len(cfg.discounts) != len(task.signals):
            raise ValueError(
                f"discounts: {len(cfg.discounts)} values for {len(task.signals)} signals {task.signal_names}"
            )
        self.register_buffer("gammas", torch.tensor(cfg.discounts or task.discounts, dtype=torch.float32))
        # Per-signal reward scale, frozen at the first batch (std of each signal's reward):
        # critics and advantages work in "reward std" units, so one learning rate and one λ
        # fit watch time in seconds and interaction rates alike. Constraint values stay raw.
        self.register_buffer("reward_scales", torch.ones(len(task.signals)))
        self.register_buffer("scales_frozen", torch.zeros((), dtype=torch.bool))
        if self.uses_critics:
            self.critics = SignalCritics(task.obs_size, len(task.signals), cfg.hidden)
            self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.build()

    # -- hooks ---------------------------------------------------------------
    def build(self) -> None:
        """Create extra networks."""

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not self._is_critic_param(n)]

    def _is_critic_param(self, name: str) -> bool:
        return name.startswith(("critics.", "target_critics.", "q_critics.", "main_q."))

    def all_actors(self) -> list[Actor]:
        """Every policy network this learner trains (warm-started together offline)."""
        return [self.actor]

    def actor_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_critic_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        return torch.zeros((), device=mb.obs.device), {}

    def advantage_estimates(self, mb: MiniBatch) -> Tensor:
        """Per-signal advantages (B, m) the actor losses use; default: GAE / TD advantages."""
        return mb.advantages

    def on_batch_start(self, batch: TransitionBatch) -> dict[str, float]:
        return {}

    # -- helpers for losses ------------------------------------------------------
    @property
    def d(self) -> Dist:
        assert self.dist is not None, "Learner.setup(dist) must be called before training"
        return self.dist

    def normalised(self, x: Tensor) -> Tensor:
        """(x − mean) / std with moments over the global minibatch (all ranks)."""
        m, s = self.d.moments(x)
        return (x - m) / (s + 1e-8)

    def global_is(self, log_ratio: Tensor, clip: float) -> Tensor:
        """Clipped importance weights self-normalised by the global (all-rank) mean."""
        raw = importance_weights(log_ratio.detach(), clip, self_normalise=False)
        total = (self.d.sum(raw.sum()), self.d.sum(torch.tensor(float(raw.shape[0]), device=raw.device)))
        return importance_weights(log_ratio.detach(), clip, self_normalise=True, total=total)

    def policy_gradient_loss(self, actor: Actor, mb: MiniBatch, adv: Tensor) -> Tensor:
        """−mean clipped surrogate of `actor` on the logged actions against the data's policy μ."""
        from training.rl.functional import clipped_surrogate

        logp = actor.log_prob(mb.obs, mb.action)
        return -clipped_surrogate(logp, mb.behaviour_log_prob, adv, self.cfg.ppo_clip).mean()

    # -- training ------------------------------------------------------------------
    def setup(self, dist: Dist) -> None:
        self.dist = dist
        self.to(dist.device)
        # Kept out of the module tree: the loss module contains this learner (no cycle).
        self.__dict__["_wrapped"] = dist.wrap(_LossModule(self))
        groups = [{"params": self.actor_parameters(), "lr": self.cfg.actor_lr}]
        if self.uses_critics:
            crit = [p for n, p in self.named_parameters() if p.requires_grad and self._is_critic_param(n)]
            groups.append({"params": crit, "lr": self.cfg.critic_lr})
        self.optimizer = torch.optim.Adam(groups)

    @torch.no_grad()
    def act(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Sample an action for collection; sampling noise on CPU so results do not depend on the device."""
        dev = self.gammas.device
        if isinstance(self.actor, CategoricalActor):
            # Log-probabilities on the device, the draw on the CPU.
            return self.actor.draw(self.actor(obs.to(dev)).cpu(), generator)
        mean, log_std = self.actor(obs.to(dev))
        mean, log_std = mean.cpu(), log_std.cpu()
        if self.held_noise:
            z = self.__dict__.get("_episode_z")
            if z is None or z.shape != mean.shape:
                z = self._first_episode_noise(mean.shape, generator)
                self.__dict__["_episode_z"] = z
            action = mean + z * log_std.exp()
        else:
            action = mean + torch.randn(mean.shape, generator=generator) * log_std.exp()
        from training.rl.networks import gaussian_log_prob

        return action, gaussian_log_prob(action, mean, log_std)

    @property
    def held_noise(self) -> bool:
        """Online exploration noise held per episode (`episode_noise`, or implied by `episode_pairs`)."""
        return (self.cfg.episode_noise or self.cfg.advantage == "episode_pairs") and not self.offline

    def _first_episode_noise(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        if self.cfg.advantage != "episode_pairs":
            return torch.randn(shape, generator=generator)
        n, a = shape
        if n % 2:
            raise ValueError(f"episode_pairs: needs an even number of environment rows (pairs), got {n}")
        # Rows 2k and 2k+1 play +z and −z (antithetic); later episodes pair by their index in the row.
        half = torch.randn((n // 2, a), generator=generator)
        self.__dict__["_row_episode"] = torch.zeros(n, dtype=torch.long)
        self.__dict__["_pair_noise"] = {}
        return torch.stack([half, -half], dim=1).reshape(n, a)

    def episodes_ended(self, ended: Tensor, generator: torch.Generator) -> None:
        """Collection hook: rows whose episode just ended draw fresh episode noise (`episode_noise`);
        with `episode_pairs` a row's j-th episode plays −1 × its partner's j-th offset."""
        z = self.__dict__.get("_episode_z")
        if z is None or not bool(ended.any()):
            return
        rows = ended.bool().cpu()
        if self.cfg.advantage != "episode_pairs":
            z[rows] = torch.randn((int(rows.sum()), z.shape[1]), generator=generator)
            return
        episode: Tensor = self.__dict__["_row_episode"]
        shared: dict[tuple[int, int], Tensor] = self.__dict__["_pair_noise"]
        for row in torch.nonzero(rows).flatten().tolist():
            episode[row] += 1
            key = (row // 2, int(episode[row]))
            base = shared.pop(key, None)  # the partner drew it already: use it (and forget it)
            if base is None:
                base = torch.randn(z.shape[1], generator=generator)
                shared[key] = base
            z[row] = base if row % 2 == 0 else -base

    @torch.no_grad()
    def rollout_targets(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """GAE advantages and TD(λ) critic targets per signal, flattened to (T·N, m)."""
        t, n = rollout.obs.shape[:2]
        v = self.critics(rollout.obs.reshape(t * n, -1)).reshape(t, n, -1)
        v_next = self.critics(rollout.next_obs.reshape(t * n, -1)).reshape(t, n, -1)
        m = v.shape[-1]
        done = rollout.terminated[..., None].expand(-1, -1, m)
        ends = rollout.ends[..., None].expand(-1, -1, m)
        adv = gae(rollout.rewards / self.reward_scales, v, v_next, done, self.gammas, self.cfg.gae_lambda, ends)
        return adv.reshape(t * n, m), (adv + v).reshape(t * n, m)

    def _minibatch(self, batch: TransitionBatch, idx: Tensor, adv: Tensor | None, tgt: Tensor | None) -> MiniBatch:
        b = batch.index(idx)
        ones = torch.ones(len(b), device=b.obs.device)
        if not self.uses_critics:
            zeros = torch.zeros(len(b), len(self.task.signals), device=b.obs.device)
            return MiniBatch(b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, zeros, zeros, ones)
        if adv is not None and tgt is not None:
            return MiniBatch(
                b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, adv[idx], tgt[idx], ones
            )
        with torch.no_grad():
            m = len(self.task.signals)
            y = td_targets(
                b.rewards / self.reward_scales,
                self.target_critics(b.next_obs),
                b.done[:, None].expand(-1, m),
                self.gammas,
            )
            a = y - self.critics(b.obs)
            w = self.global_is(self.actor.log_prob(b.obs, b.action) - b.behaviour_log_prob, self.cfg.is_clip)
        return MiniBatch(b.obs, b.action, b.rewards, b.next_obs, b.done, b.behaviour_log_prob, a, y, w)

    def total_loss(self, mb: MiniBatch) -> tuple[Tensor, dict[str, float]]:
        metrics: dict[str, float] = {}
        loss = torch.zeros((), device=mb.obs.device)
        if self.uses_critics:
            err = (self.critics(mb.obs) - mb.targets).pow(2) * mb.weights[:, None]
            per_signal = err.mean(0)
            loss = loss + per_signal.sum()
            for name, v in zip(self.task.signal_names, per_signal.detach().tolist(), strict=True):
                metrics[f"losses/critic_{name}"] = v
            extra, em = self.extra_critic_loss(mb)
            loss = loss + extra
            metrics |= em
        actor_loss, am = self.actor_loss(mb)
        metrics |= am
        if self.cfg.entropy_coef > 0:
            ent = self.actor.entropy(mb.obs).mean()
            actor_loss = actor_loss - self.cfg.entropy_coef * ent
            metrics["charts/entropy"] = ent.item()
        metrics["losses/actor"] = actor_loss.item()
        return loss + actor_loss, metrics

    def update(
        self, batch: TransitionBatch, rollout: Rollout | None, generator: torch.Generator, steps: int
    ) -> dict[str, float]:
        """Train on one batch: online (rollout given) `epochs` passes; offline `steps` minibatches."""
        dev = self.d.device
        batch = batch.to(dev)
        if not bool(self.scales_frozen):
            with torch.no_grad():
                _, std = self.d.moments(batch.rewards)
                self.reward_scales.copy_(std.clamp_min(1e-6))
                self.scales_frozen.fill_(True)
        adv = tgt = None
        if rollout is not None and self.cfg.advantage == "episode_pairs":
            ready = self._episode_pairs_ready(rollout)
            if ready is None:
                return {"charts/episode_pair_transitions": 0.0}
            batch, adv, tgt = ready
            batch = batch.to(dev)
        elif rollout is not None and self.uses_critics:
            adv, tgt = self.rollout_targets(rollout)
        metrics = self.on_batch_start(batch)
        if rollout is not None and self.cfg.advantage == "episode_pairs":
            metrics["charts/episode_pair_transitions"] = float(len(batch))
        n, mbs = len(batch), self.cfg.minibatch_size
        if mbs % self.d.world_size:
            raise ValueError(f"minibatch_size {mbs} must divide by the number of processes {self.d.world_size}")
        chunks: list[Tensor] = []
        if rollout is not None:
            # Online, every rank collected its own rollout: each takes local minibatches of
            # mbs / world_size rows, so the global minibatch (summed over ranks) is mbs rows.
            local = mbs // self.d.world_size
            for _ in range(self.cfg.epochs):
                perm = torch.randperm(n, generator=generator)
                chunks += [perm[i : i + local] for i in range(0, n - local + 1, local)] or [perm]
        else:
            # Offline, every rank holds the same dataset: the same global minibatch is drawn
            # everywhere and each rank takes its own shard of it.
            chunks = [self.d.shard(torch.randint(0, n, (mbs,), generator=generator)) for _ in range(steps)]
        sums: dict[str, float] = {}
        for chunk in chunks:
            idx = chunk.to(dev)
            mb = self._minibatch(batch, idx, adv, tgt)
            loss, m = self._wrapped(mb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            if self.uses_critics and rollout is None:
                soft_update(self.target_critics, self.critics, self.cfg.tau)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        if self.uses_critics and rollout is not None:
            soft_update(self.target_critics, self.critics, 1.0)
        metrics |= {k: v / max(len(chunks), 1) for k, v in sums.items()}
        return metrics

    def _episode_pairs_ready(self, rollout: Rollout) -> tuple[TransitionBatch, Tensor, Tensor] | None:
        """Buffer the rollout; return the transitions of complete episode pairs with standardised advantages."""
        if self.d.world_size > 1:
            raise ValueError("advantage='episode_pairs' runs in one process (ranks would hold different batch sizes)")
        buf: EpisodePairBuffer | None = self.__dict__.get("_pair_buffer")
        if buf is None:
            buf = EpisodePairBuffer(rollout.obs.shape[1])
            self.__dict__["_pair_buffer"] = buf
        t, n = rollout.obs.shape[:2]
        if self.uses_critics:
            targets = self.rollout_targets(rollout)[1]
        else:
            targets = torch.zeros(t * n, len(self.task.signals), device=rollout.obs.device)
        buf.add(rollout, targets)
        ready = buf.pop_ready()
        if ready is None:
            return None
        batch, adv, tgt = ready
        # Standardised per signal over the batch (antithetic pairs are centred by construction).
        adv = adv / (adv.pow(2).mean(0, keepdim=True).sqrt() + 1e-8)
        return batch, adv, tgt

    def warm_start(self, batch: TransitionBatch, generator: torch.Generator) -> float:
        """Offline: behaviour-clone every actor of this learner so trust regions start at μ; returns final NLL."""
        top = self.all_actors()
        params = [p for a in top for p in a.parameters()]
        if not params or self.cfg.warm_start_steps == 0:
            return float("nan")
        opt = torch.optim.Adam(params, lr=3e-3)
        batch = batch.to(self.d.device)
        nll = torch.zeros(())
        for _ in range(self.cfg.warm_start_steps):
            idx = torch.randint(0, len(batch), (self.cfg.minibatch_size,), generator=generator).to(self.d.device)
            nll = sum(
                (-a.log_prob(batch.obs[idx], batch.action[idx]).mean() for a in top),
                torch.zeros((), device=self.d.device),
            )
            opt.zero_grad()
            nll.backward()
            opt.step()
        return nll.item() / len(top)

    # -- artefacts -------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.load_state_dict(tensors)
