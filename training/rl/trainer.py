"""The small trainer every gradient-based algorithm runs through, and the one generic `train`.

`Trainer(loss, run_cfg)` owns what a loss module must not: the optimiser (one Adam
with the groups the loss declares in `parameter_groups()`), the DDP wrapper, the
minibatch loop, target-network updates, the exploration state, logging and
checkpoints. `fit(source)` trains online (an `EnvPool` built by `OnlineSource`) or
offline (an `OfflineSource` of logged transitions).

One iteration online = collect `rollout_steps` × `n_envs` transitions with the
current actor and the configured exploration (training/rl/exploration.py), then
`epochs` passes of minibatch steps on them (GAE / TD(λ) targets computed once).
One iteration offline = `offline_steps` minibatch steps on the dataset, after
warm-starting the actors by behaviour cloning. Offline importance weights use the
*logged* propensities; a behaviour model μ̂ is fitted only for rows that lack one
(or everywhere when `RunConfig.learn_behaviour` asks for it).

Logged per iteration (rank 0; metrics.jsonl live, TensorBoard live, metrics.csv and
curves.png at the end): per-decision mean of every signal, the undiscounted return
of every signal over the episodes that ended in the iteration
(`charts/episode_return_<signal>`), every constraint's value and slack, whatever the
loss reports (multipliers: `charts/multiplier_<signal>`). Checkpoints:
`checkpoint.safetensors` (last iterate) and, for constrained tasks trained online,
`best_feasible.safetensors` — the iterate with the highest main-signal mean among
those whose batch met every constraint.

Distributed: online, every rank collects its own rollout and takes local minibatches
of minibatch_size / world_size rows; offline, every rank draws the same global
minibatch and takes its shard. Normalisers are reduced over ranks and DDP averages
gradients, so two processes compute what one computes up to floating-point noise.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.rl.behaviour import BehaviourModel
from training.rl.data import EnvPool, Rollout, RolloutCollector, TransitionBatch
from training.rl.episode_pairs import EpisodePairBuffer
from training.rl.exploration import make_act, make_exploration
from training.rl.functional import soft_update
from training.rl.losses import LossModule
from training.rl.networks import CloneConfig
from training.rl.runtime import Dist, MetricsLogger, pick_device, save_checkpoint, seed_everything
from training.rl.task import TaskSpec, constraint_report


@dataclass(frozen=True)
class RunConfig:
    """How long and where a training run goes (algorithm hyperparameters live in each algorithm's config)."""

    seed: int = 0
    """Seeds network init, minibatch sampling and (plus the rank) environment resets."""
    iterations: int = 50
    """Collect-and-update rounds online; update rounds offline."""
    rollout_steps: int = 32
    """Online: steps per environment per iteration."""
    n_envs: int = 16
    """Online: environments stepped together (per process)."""
    offline_steps: int = 50
    """Offline: minibatch updates per iteration."""
    learn_behaviour: bool = False
    """Offline: fit μ̂ and use it for importance weights everywhere, replacing the logged propensities
    (the TSCAC paper's choice when logs carry none). Default: the exact logged propensities; μ̂ fills
    only rows whose propensity is missing (NaN)."""
    behaviour_steps: int = 400
    """Offline: maximum-likelihood steps of μ̂ (when it is fitted)."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    out_dir: str = ""
    """Where metrics, curves and checkpoints go; empty = $TROUPE_HOME/runs/<task>/<algorithm>."""
    progress: bool = True
    """Show a progress bar on rank 0."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    plots: bool = True
    """Write curves.png at the end."""
    cpu_threads: int = 1
    """torch intra-op threads on CPU: the networks are small, and more threads only contend."""

    def __post_init__(self) -> None:
        for name in ("iterations", "rollout_steps", "n_envs", "offline_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.cpu_threads < 1:
            raise ValueError(f"RunConfig.cpu_threads: must be >= 1, got {self.cpu_threads}")
        if self.behaviour_steps < 0:
            raise ValueError(f"RunConfig.behaviour_steps: must be >= 0, got {self.behaviour_steps}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"run: unknown field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def default_out_dir(task: str, algorithm: str) -> Path:
    """$TROUPE_HOME/runs/<task>/<algorithm> (TROUPE_HOME defaults to ./var, as everywhere in Troupe)."""
    import os

    return Path(os.environ.get("TROUPE_HOME", "var")) / "runs" / task / algorithm


@dataclass
class OnlineSource:
    """Environments to train in: `make_pool(n_envs, seed)` builds this process's EnvPool."""

    make_pool: Callable[[int, int], EnvPool]


@dataclass
class OfflineSource:
    """Logged transitions to train from."""

    batch: TransitionBatch


@dataclass
class RunResult:
    learner: LossModule
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path = Path(".")
    transitions: int = 0
    seconds: float = 0.0
    data_range: tuple[Any, Any] | None = None
    best_feasible: dict[str, float] | None = None
    cloned_actor_state: dict[str, Tensor] | None = None
    """Offline with a warm start: the actor's parameters right after behaviour cloning, before any
    policy step (the anchor of the trust region, training/rl/trust_region.py). Online with a
    `PolicyStart`: the actor's parameters right after it was fitted to the rule."""


@dataclass(frozen=True)
class PolicyStart:
    """Ours, off unless a run is given one (`train(..., policy_start=...)`, online only): the learner starts at a
    state-dependent rule instead of a constant (`LossConfig.start_action`).

    Before the first iteration the rule plays `rollout_steps` steps in every environment row of the training
    world (the run's own seed, so its own catalog and first users; deterministic, no exploration), and the
    loss fits its actor's mode to the rule's actions on those observations (`LossModule.start_policy`,
    `Actor.start_policy`), exploration σ unchanged; every policy the loss keeps as a copy of the actor
    starts as that copy. What the learner's updates then do to a good state-aware start is the question it
    serves (benchmarks/rank_rule_start_probe.py)."""

    rule: Callable[[np.ndarray], np.ndarray]
    """observations (N, O) → actions (N, A) inside the action box, e.g. `benchmarks/headroom_rank.py`'s rule."""
    rollout_steps: int = 512
    """Steps per environment row the rule plays to collect the observations it is cloned on."""
    clone: CloneConfig = field(default_factory=CloneConfig)
    """How the actor's mode is fitted (steps, step size, minibatch, seed)."""

    def __post_init__(self) -> None:
        if self.rollout_steps < 1:
            raise ValueError(f"rollout_steps: must be >= 1, got {self.rollout_steps}")


WARM_START_HOLDOUT = 0.1
"""Share of the logged rows behaviour cloning holds out to stop early on (`Trainer.warm_start`)."""


class Trainer:
    """Optimiser, DDP, minibatch loop, target updates, exploration, logging and checkpoints for one loss."""

    def __init__(self, loss: LossModule, run_cfg: RunConfig, policy_start: PolicyStart | None = None) -> None:
        self.loss, self.run_cfg, self.cfg = loss, run_cfg, loss.cfg
        self.policy_start = policy_start
        self.dist = Dist(pick_device(run_cfg.device))
        if self.dist.device.type == "cpu":
            torch.set_num_threads(run_cfg.cpu_threads)
        loss.bind(self.dist)
        self.wrapped: nn.Module = self.dist.wrap(loss)
        groups = loss.parameter_groups()
        self._check_groups(groups)
        self.optimizer = torch.optim.Adam([{"params": g.params, "lr": g.lr} for g in groups if g.params])
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.exploration = make_exploration(self.cfg.exploration, self.cfg.state_noise_share, loss.task.agents)
        self.pair_buffer: EpisodePairBuffer | None = None
        self.generator = torch.Generator().manual_seed(run_cfg.seed)

    def _check_groups(self, groups: list[Any]) -> None:
        """Every trainable parameter in exactly one group: a forgotten network would silently never train."""
        seen: dict[int, str] = {}
        for g in groups:
            for p in g.params:
                if id(p) in seen:
                    raise ValueError(f"{self.loss.algorithm}: a parameter is in groups {seen[id(p)]!r} and {g.name!r}")
                seen[id(p)] = g.name
        missing = [n for n, p in self.loss.named_parameters() if p.requires_grad and id(p) not in seen]
        if missing:
            raise ValueError(
                f"{self.loss.algorithm}: parameters {missing[:5]} are in no parameter group; "
                "declare them in parameter_groups()"
            )

    def anneal_lr(self, iteration: int) -> None:
        """`LossConfig.lr_anneal`: every group's lr = base · (1 − iteration / iterations); and the
        entropy bonus = entropy_coef · 0.5^(iteration / entropy_halflife) (`LossConfig.entropy_halflife`)."""
        if self.cfg.entropy_halflife > 0:
            self.loss.entropy_weight = self.cfg.entropy_coef * 0.5 ** (iteration / self.cfg.entropy_halflife)
        if not self.cfg.lr_anneal:
            return
        frac = 1.0 - iteration / self.run_cfg.iterations
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * frac

    # -- one batch -------------------------------------------------------------------
    def update(self, batch: TransitionBatch, rollout: Rollout | None, steps: int = 0) -> dict[str, float]:
        """Train on one batch: online (rollout given) `epochs` passes; offline `steps` minibatches."""
        loss, dev = self.loss, self.dist.device
        batch = batch.to(dev)
        loss.freeze_reward_scales(batch.rewards)
        adv = tgt = None
        if rollout is not None and self.cfg.advantage == "episode_pairs":
            ready = self._episode_pairs_ready(rollout)
            if ready is None:
                return {"charts/episode_pair_transitions": 0.0}
            batch, adv, tgt = ready
            batch = batch.to(dev)
        elif rollout is not None:
            adv, tgt = loss.online_targets(rollout)
        metrics = loss.on_batch_start(batch)
        if rollout is not None and self.cfg.advantage == "episode_pairs":
            metrics["charts/episode_pair_transitions"] = float(len(batch))
        n, mbs = len(batch), self.cfg.minibatch_size
        if mbs % self.dist.world_size:
            raise ValueError(f"minibatch_size {mbs} must divide by the number of processes {self.dist.world_size}")
        chunks: list[Tensor] = []
        gen = self.generator
        if rollout is not None:
            local = mbs // self.dist.world_size
            for _ in range(self.cfg.epochs):
                perm = torch.randperm(n, generator=gen)
                chunks += [perm[i : i + local] for i in range(0, n - local + 1, local)] or [perm]
        else:
            chunks = [self.dist.shard(torch.randint(0, n, (mbs,), generator=gen)) for _ in range(steps)]
        sums: dict[str, float] = {}
        for chunk in chunks:
            idx = chunk.to(dev)
            if adv is not None and tgt is not None:
                mb = loss.online_minibatch(batch, idx, adv, tgt)
            else:
                mb = loss.offline_minibatch(batch, idx)
            total, m = self.wrapped(mb)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            nn.utils.clip_grad_norm_(loss.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            if rollout is None:
                for target, source in loss.target_pairs():
                    soft_update(target, source, self.cfg.tau)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        if rollout is not None:
            for target, source in loss.target_pairs():
                soft_update(target, source, 1.0)
        metrics |= {k: v / max(len(chunks), 1) for k, v in sums.items()}
        return metrics

    def _episode_pairs_ready(self, rollout: Rollout) -> tuple[TransitionBatch, Tensor, Tensor] | None:
        """Buffer the rollout; return the transitions of complete episode pairs with standardised advantages."""
        if self.dist.world_size > 1:
            raise ValueError("advantage='episode_pairs' runs in one process (ranks would hold different batch sizes)")
        if self.pair_buffer is None:
            self.pair_buffer = EpisodePairBuffer(rollout.obs.shape[1])
        targets = self.loss.online_targets(rollout)[1]
        self.pair_buffer.add(rollout, targets)
        ready = self.pair_buffer.pop_ready()
        if ready is None:
            return None
        batch, adv, tgt = ready
        # Standardised per signal over the batch (antithetic pairs are centred by construction).
        adv = adv / (adv.pow(2).mean(0, keepdim=True).sqrt() + 1e-8)
        return batch, adv, tgt

    def warm_start(self, batch: TransitionBatch) -> float:
        """Offline: behaviour-clone every policy of the loss so trust regions start at μ; returns the final NLL.

        Ours, all of it (the papers start from a clone and say no more):
        * The clone maximises the likelihood of the policy *as it serves* (`Actor.served_log_prob`: the
          exported median and linearised σ, sampled as a clipped Gaussian), not of the TanhNormal, whose median
          sits off the logged mean toward the nearer bound (Jensen; 0.08 σ at the demo's weights 0.15 and 0.85).
        * Every box policy starts at the logged actions' mean and σ (`Actor.start_at`). From the task's default
          start (rank: watch-time weight 0.99 with σ 0.0006 against logs at 0.15 ± 0.03) the first gradients
          were ~1e6 times the last ones, and Adam's second moment (β2 = 0.999) kept that scale to the end: the
          watch weight's σ froze at 0.82 of the logged one and its median sat 0.1 σ off, and on the demo's
          logs the clone alone scored −0.31 to −0.42 s/decision below production by the gate's DR estimate.
        * Early stopping: `WARM_START_HOLDOUT` of the rows (at least 20 in all) are held out, their NLL is read
          every `steps // 40` steps, and the policies keep the parameters of the best reading. Without it a
          clone of a constant logging policy fits the rows' noise (on 600 rows its mean moved 0.2–0.4 σ
          from state to state), which the importance weights on those same rows punish.
        * The step size decays linearly to 0, so the clone settles instead of jittering (at a constant 3e-3
          the cloned rank fusion weights sat 0.2–0.3 σ off the logged ones).
        """
        top = self.loss.policies()
        params = [p for a in top for p in a.parameters()]
        if not params or self.cfg.warm_start_steps == 0:
            return float("nan")
        steps, dev = self.cfg.warm_start_steps, self.dist.device
        batch = batch.to(dev)
        logged_mean, logged_std = batch.action.mean(0), batch.action.std(0)
        for policy in top:
            if policy.distribution(batch.obs[:1]).event_shape == logged_mean.shape:
                policy.start_at(logged_mean, logged_std)
        order = torch.randperm(len(batch), generator=self.generator).to(dev)
        n_held = int(len(batch) * WARM_START_HOLDOUT) if len(batch) >= 20 else 0
        held, fit = order[:n_held], order[n_held:]

        def nll(idx: Tensor) -> Tensor:
            obs, action = batch.obs[idx], batch.action[idx]
            return sum((-a.served_log_prob(obs, action).mean() for a in top), torch.zeros((), device=dev)) / len(top)

        def held_out_nll() -> float:
            with torch.no_grad():
                return float(nll(held[:4096]).item()) if n_held else float("nan")

        best_nll, best_state = held_out_nll(), [copy.deepcopy(a.state_dict()) for a in top]
        opt = torch.optim.Adam(params, lr=self.cfg.warm_start_lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / steps)
        check_every = max(steps // 40, 1)
        for k in range(steps):
            pick = torch.randint(0, len(fit), (self.cfg.minibatch_size,), generator=self.generator).to(dev)
            loss = nll(fit[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            if n_held and ((k + 1) % check_every == 0 or k + 1 == steps):
                reading = held_out_nll()
                if reading < best_nll:
                    best_nll, best_state = reading, [copy.deepcopy(a.state_dict()) for a in top]
        if n_held:
            for a, state in zip(top, best_state, strict=True):
                a.load_state_dict(state)
            return best_nll
        return float(loss.item())

    def start_at_rule(self, source: OnlineSource, start: PolicyStart) -> float:
        """Online, before the first iteration: fit the loss's policies to `start.rule` played in the training world
        (`PolicyStart`); returns the fit's final mean squared error."""
        if self.dist.world_size > 1:
            raise ValueError("policy_start: single process only (each rank would fit its own start)")
        pool = source.make_pool(self.run_cfg.n_envs, self.run_cfg.seed)
        obs = pool.reset(self.run_cfg.seed)  # the training world and its first users
        seen, played = [], []
        for _ in range(start.rollout_steps):
            actions = np.asarray(start.rule(obs), np.float32)
            seen.append(obs)
            played.append(actions)
            obs = pool.step(actions).obs
        device = self.dist.device
        return self.loss.start_policy(
            torch.as_tensor(np.concatenate(seen), dtype=torch.float32, device=device),
            torch.as_tensor(np.concatenate(played), device=device),
            start.clone,
        )

    # -- whole runs ------------------------------------------------------------------
    def fit(self, source: OnlineSource | OfflineSource) -> RunResult:
        """Train on `source`; the same call works in one process or under torchrun."""
        loss, run_cfg, dist = self.loss, self.run_cfg, self.dist
        out = Path(run_cfg.out_dir) if run_cfg.out_dir else default_out_dir(loss.task.name, loss.algorithm)
        logger = MetricsLogger(out, enabled=dist.is_main, tensorboard=run_cfg.tensorboard, plots=run_cfg.plots)
        result = RunResult(loss, out_dir=out)
        bar = None
        if run_cfg.progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=run_cfg.iterations, desc=loss.algorithm, unit="it", leave=False)
        t0 = time.perf_counter()
        try:
            if isinstance(source, OnlineSource):
                self._fit_online(source, result, logger, bar, t0, out)
            else:
                self._fit_offline(source, result, logger, bar, t0)
            result.seconds = time.perf_counter() - t0
            if dist.is_main:
                self.save(out / "checkpoint.safetensors")
        finally:
            if bar is not None:
                bar.close()
            logger.close()
            dist.close()
        return result

    def _fit_online(
        self, source: OnlineSource, result: RunResult, logger: MetricsLogger, bar: Any, t0: float, out: Path
    ) -> None:
        loss, run_cfg, dist = self.loss, self.run_cfg, self.dist
        loss.offline = False
        if self.policy_start is not None and self.cfg.obs_standardise:
            raise ValueError(
                "obs_standardise: expected False with a policy_start (the statistics, fitted after the first batch, "
                "would change the function the actor was fitted to the rule as)"
            )
        if self.policy_start is not None:
            logger.log(0, {"losses/policy_start_mse": self.start_at_rule(source, self.policy_start)})
            result.cloned_actor_state = {k: v.detach().clone().cpu() for k, v in loss.actor.state_dict().items()}
        pool = source.make_pool(run_cfg.n_envs, run_cfg.seed + 1000 * dist.rank)
        if self.cfg.advantage == "episode_pairs":
            pair_rows = getattr(pool, "pair_rows", None)
            if pair_rows is None:
                raise ValueError(
                    f"advantage='episode_pairs' needs an environment pool with antithetic row pairs "
                    f"(BatchedSimPool on rank); {type(pool).__name__} has none — use advantage='gae'"
                )
            pair_rows()
        collector = RolloutCollector(pool, run_cfg.seed + 1000 * dist.rank)
        act = make_act(loss.actor, self.exploration, dist.device)
        best = -float("inf")
        for it in range(run_cfg.iterations):
            loss.eval()
            rollout = collector.collect(
                act, run_cfg.rollout_steps, dist.device, on_ends=self.exploration.episodes_ended
            )
            loss.train()
            batch = rollout.flatten()
            if it == 0 and self.cfg.obs_standardise:
                # Ours (`LossConfig.obs_standardise`): once, from the first batch, before any update; the first
                # batch itself was played with the identity (the warm start plays its constant in any case).
                loss.fit_standardisers(batch.obs.to(dist.device), batch.action.to(dist.device))
            self.anneal_lr(it)
            metrics = self.update(batch, rollout)
            means = dist.mean(batch.rewards).tolist()
            for name, v in zip(loss.task.signal_names, means, strict=True):
                metrics[f"charts/signal_{name}"] = v
            report = constraint_report(loss.task, means)
            metrics |= {f"charts/{k}": v for k, v in report.items()}
            metrics |= episode_metrics(loss.task, collector.pop_episodes())
            result.transitions = int(collector.transitions * dist.world_size)
            feasible = all(v >= 0 for k, v in report.items() if k.startswith("constraint_slack_"))
            if loss.task.constraints and feasible and means[0] > best and dist.is_main:
                best = means[0]
                result.best_feasible = {"iteration": float(it), "main_mean": means[0]}
                self.save(out / "best_feasible.safetensors", {"iteration": str(it)})
            _tick(result, logger, bar, it, metrics, t0)
        end_metrics = loss.on_train_end()
        if end_metrics:
            logger.log(run_cfg.iterations, end_metrics)

    def _fit_offline(
        self, source: OfflineSource, result: RunResult, logger: MetricsLogger, bar: Any, t0: float
    ) -> None:
        loss, run_cfg = self.loss, self.run_cfg
        if self.cfg.advantage != "gae" or self.cfg.exploration != "per_step":
            raise ValueError(
                f"{loss.algorithm}: advantage={self.cfg.advantage!r} and exploration={self.cfg.exploration!r} act only "
                "while collecting in an environment; offline training (logged transitions) needs advantage='gae' "
                "(critic-based, one-step TD) and exploration='per_step' — put online-only settings in the config "
                "file's `online:` section"
            )
        loss.offline = True
        if self.policy_start is not None:
            raise ValueError("policy_start: online training only (offline, the actors start by cloning the logs)")
        batch = source.batch
        result.data_range = batch.time_range
        missing = torch.isnan(batch.behaviour_log_prob)
        if run_cfg.learn_behaviour or bool(missing.any()):
            mu = BehaviourModel(loss.task, self.cfg.hidden, seed=run_cfg.seed)
            # Every logged row is an (s, a) draw of the logging policy, with or without its propensity.
            nll = mu.fit(batch, steps=max(run_cfg.behaviour_steps, 1), seed=run_cfg.seed)
            batch = mu.fill(batch, overwrite=run_cfg.learn_behaviour)
            logger.log(
                0, {"losses/behaviour_nll": nll[-1], "charts/behaviour_filled_share": float(missing.float().mean())}
            )
        if self.cfg.obs_standardise:  # ours: fitted once on the logged inputs, before the clone learns on them
            loss.fit_standardisers(batch.obs.to(self.dist.device), batch.action.to(self.dist.device))
        if self.cfg.warm_start_steps:
            logger.log(0, {"losses/warm_start_nll": self.warm_start(batch)})
            result.cloned_actor_state = {k: v.detach().clone().cpu() for k, v in loss.actor.state_dict().items()}
        for it in range(run_cfg.iterations):
            self.anneal_lr(it)
            metrics = self.update(batch, None, run_cfg.offline_steps)
            result.transitions = (it + 1) * run_cfg.offline_steps * self.cfg.minibatch_size
            _tick(result, logger, bar, it, metrics, t0)

    def save(self, path: Path, extra: Mapping[str, str] | None = None) -> None:
        loss = self.loss
        meta = {"algorithm": loss.algorithm, "task": loss.task.name, "config": json.dumps(asdict(loss.cfg))}
        save_checkpoint(path, loss.state_tensors(), {**meta, **dict(extra or {})})


def episode_metrics(task: TaskSpec, episodes: list[tuple[np.ndarray, int]]) -> dict[str, float]:
    """Mean undiscounted return of every signal over ended episodes, their mean length, and each
    constraint's slack measured on the episodes' per-decision means (empty when none ended)."""
    if not episodes:
        return {}
    sums = np.stack([e[0] for e in episodes])
    lengths = np.asarray([e[1] for e in episodes], dtype=np.float64)
    out = {f"charts/episode_return_{n}": float(v) for n, v in zip(task.signal_names, sums.mean(0), strict=True)}
    out["charts/episode_length"] = float(lengths.mean())
    per_decision = (sums / lengths[:, None]).mean(0)
    report = constraint_report(task, per_decision.tolist())
    out |= {f"charts/episode_{k}": v for k, v in report.items() if k.startswith("constraint_slack_")}
    return out


def _tick(result: RunResult, logger: MetricsLogger, bar: Any, it: int, metrics: dict[str, float], t0: float) -> None:
    elapsed = time.perf_counter() - t0
    metrics["charts/transitions_per_s"] = result.transitions / max(elapsed, 1e-9)
    result.history.append({"iteration": float(it), **metrics})
    logger.log(it, metrics)
    if bar is not None:
        bar.update(1)
        shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in metrics.items() if k.startswith("charts/signal_")}
        bar.set_postfix(shown, refresh=False)


def train(
    algorithm: str,
    task: TaskSpec,
    source: OnlineSource | OfflineSource,
    config: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    init_mean: tuple[float, ...] | None = None,
    policy_start: PolicyStart | None = None,
) -> RunResult:
    """The one generic entry point: registry name + task + data source + config sections → trained run.

    `config` holds the sections of a config file: `run` (RunConfig fields), `algo` (the algorithm's
    config fields) and `online` (algorithm fields applied only when `source` is an environment).
    `policy_start` (ours, online, None = off): start at a state-dependent rule (`PolicyStart`).
    """
    from training.rl.registry import get_algorithm

    spec = get_algorithm(algorithm)
    if spec.loss is None and spec.fit is None:
        raise ValueError(f"algorithm {algorithm!r} is not trained by gradient steps; call its own train() instead")
    cfg = dict(config or {})
    unknown = sorted(set(cfg) - {"run", "algo", "online"})
    if unknown:
        raise ValueError(f"train: unknown config section(s) {unknown}; allowed: run, algo, online")
    algo_fields = dict(cfg.get("algo") or {})
    if isinstance(source, OnlineSource):
        algo_fields |= dict(cfg.get("online") or {})
    elif spec.data == "online":
        raise ValueError(f"{algorithm} trains in an environment only; got logged transitions")
    if spec.data == "offline" and isinstance(source, OnlineSource):
        raise ValueError(f"{algorithm} trains from logged transitions only (an OfflineSource)")
    if spec.multi_agent and not task.agents:
        raise ValueError(f"{algorithm} is multi-agent: the task needs agents (TaskSpec.agents)")
    run_fields = dict(cfg.get("run") or {})
    if out_dir is not None:
        run_fields["out_dir"] = str(out_dir)
    run_cfg = RunConfig.from_dict(run_fields)
    algo_cfg = spec.config.from_dict(algo_fields)
    seed_everything(run_cfg.seed)
    if policy_start is not None and spec.fit is not None:
        raise ValueError(f"policy_start: {algorithm} trains in its own loop; only Trainer-based learners take one")
    if spec.fit is not None:  # off-policy: the algorithm's own replay loop (training/rl/offpolicy_runner.py)
        return spec.fit(task, source, algo_cfg, run_cfg)  # type: ignore[no-any-return]
    assert spec.loss is not None
    loss = spec.loss(task, algo_cfg, init_mean)
    return Trainer(loss, run_cfg, policy_start).fit(source)
