"""Transitions: the batch type, the Parquet dataset loader and online rollout collection.

Dataset layout (written by `pipelines/jobs/dataset.py`, one row per transition):
observation (list<double>), action (list<double>), reward_<signal> per signal,
next_observation (list<double>), done (bool), propensity (double: probability of
the logged discrete action, or the density of a continuous one), log_density
(double: log of the same), policy_version, arm, user_id, session_id, timestamp.

Online rollouts come from an `EnvPool`: N environments stepped together; a pool
over Gymnasium envs (`GymEnvPool`) works for any env that follows the
vector-reward convention, and faster pools wrap a batched simulator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from training.rl.task import TaskSpec

_REQUIRED_COLUMNS = ("observation", "action", "next_observation", "done")


@dataclass(frozen=True)
class TransitionBatch:
    """Flat transitions (B rows). `behaviour_log_prob` is NaN where the logging policy is unknown."""

    obs: Tensor  # (B, O)
    action: Tensor  # (B, A); a discrete action is its index as a float, A = 1
    rewards: Tensor  # (B, m) in TaskSpec.signals order
    next_obs: Tensor  # (B, O)
    done: Tensor  # (B,) 1.0 = terminal, no bootstrap
    behaviour_log_prob: Tensor  # (B,)
    time_range: tuple[dt.datetime, dt.datetime] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def index(self, idx: Tensor) -> TransitionBatch:
        return replace(
            self,
            obs=self.obs[idx],
            action=self.action[idx],
            rewards=self.rewards[idx],
            next_obs=self.next_obs[idx],
            done=self.done[idx],
            behaviour_log_prob=self.behaviour_log_prob[idx],
        )

    def to(self, device: torch.device | str) -> TransitionBatch:
        return replace(
            self,
            obs=self.obs.to(device),
            action=self.action.to(device),
            rewards=self.rewards.to(device),
            next_obs=self.next_obs.to(device),
            done=self.done.to(device),
            behaviour_log_prob=self.behaviour_log_prob.to(device),
        )

    def tensors(self) -> dict[str, Tensor]:
        """Named tensors (for safetensors files)."""
        return {
            "obs": self.obs,
            "action": self.action,
            "rewards": self.rewards,
            "next_obs": self.next_obs,
            "done": self.done,
            "behaviour_log_prob": self.behaviour_log_prob,
        }

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> TransitionBatch:
        return cls(**{k: t[k] for k in ("obs", "action", "rewards", "next_obs", "done", "behaviour_log_prob")})


class DatasetError(ValueError):
    """A transition dataset that does not match the task; the message names the column and what was expected."""


def _stack_lists(column: Any, name: str, width: int) -> np.ndarray:
    values = column.to_pylist()
    try:
        arr = np.asarray(values, dtype=np.float32)
    except ValueError:
        raise DatasetError(
            f"column {name!r}: every row must be a list of {width} numbers (ragged rows found)"
        ) from None
    if arr.ndim == 1 and width == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise DatasetError(f"column {name!r}: expected lists of length {width}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DatasetError(f"column {name!r}: NaN or infinite values found")
    return arr


def load_transitions(path: str | Path, task: TaskSpec) -> TransitionBatch:
    """Read a Parquet transition dataset (a file or a folder of files) into one batch for `task`.

    Behaviour log-probability: `log_density` when present and finite, else
    log(`propensity`), else NaN (a learned behaviour model fills it in).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset {p} does not exist; build one with `troupe dataset build`")
    table = pads.dataset(str(p), format="parquet").to_table()
    if table.num_rows == 0:
        raise DatasetError(f"dataset {p} has no rows")
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.column_names]
    missing += [f"reward_{s}" for s in task.signal_names if f"reward_{s}" not in table.column_names]
    if missing:
        raise DatasetError(f"dataset {p} lacks columns {missing}; it has {table.column_names}")
    obs = _stack_lists(table.column("observation"), "observation", task.obs_size)
    next_obs = _stack_lists(table.column("next_observation"), "next_observation", task.obs_size)
    action = _stack_lists(table.column("action"), "action", task.action_dim)
    rewards = np.stack(
        [
            np.asarray(table.column(f"reward_{s}").to_numpy(zero_copy_only=False), dtype=np.float32)
            for s in task.signal_names
        ],
        axis=1,
    )
    if not np.isfinite(rewards).all():
        raise DatasetError("reward columns: NaN or infinite values found")
    done = np.asarray(table.column("done").to_numpy(zero_copy_only=False), dtype=np.float32)
    logp = np.full(len(done), np.nan, dtype=np.float32)
    if "log_density" in table.column_names:
        ld = table.column("log_density").to_numpy(zero_copy_only=False)
        logp = np.where(np.isfinite(np.asarray(ld, dtype=np.float64)), ld, logp).astype(np.float32)
    if "propensity" in table.column_names:
        pr = np.asarray(table.column("propensity").to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            from_prop = np.where(pr > 0, np.log(pr), np.nan)
        logp = np.where(np.isnan(logp), from_prop, logp).astype(np.float32)
    time_range = None
    if "timestamp" in table.column_names:
        ts = table.column("timestamp")
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        if isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime):
            time_range = (_utc(lo), _utc(hi))
        elif isinstance(lo, int | float) and isinstance(hi, int | float):  # epoch milliseconds
            time_range = (
                dt.datetime.fromtimestamp(lo / 1000, dt.UTC),
                dt.datetime.fromtimestamp(hi / 1000, dt.UTC),
            )
    return TransitionBatch(
        obs=torch.from_numpy(obs),
        action=torch.from_numpy(action),
        rewards=torch.from_numpy(rewards),
        next_obs=torch.from_numpy(next_obs),
        done=torch.from_numpy(done),
        behaviour_log_prob=torch.from_numpy(logp),
        time_range=time_range,
    )


def dataset_observation_size(path: str | Path) -> int:
    """Length of the `observation` lists of a dataset (read from its first row)."""
    import pyarrow.dataset as pads

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset {p} does not exist; build one with `troupe dataset build`")
    head = pads.dataset(str(p), format="parquet").head(1, columns=["observation"])
    if head.num_rows == 0:
        raise DatasetError(f"dataset {p} has no rows")
    return len(head.column("observation")[0].as_py())


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def write_transitions(
    path: str | Path, batch: TransitionBatch, task: TaskSpec, start: dt.datetime | None = None
) -> None:
    """Write a batch in the dataset layout above (tests, benchmarks and `--sim` log generation)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(batch)
    t0 = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cols: dict[str, Any] = {
        "observation": pa.array(batch.obs.double().tolist(), type=pa.list_(pa.float64())),
        "action": pa.array(batch.action.double().tolist(), type=pa.list_(pa.float64())),
    }
    for i, s in enumerate(task.signal_names):
        cols[f"reward_{s}"] = pa.array(batch.rewards[:, i].double().numpy())
    logp = batch.behaviour_log_prob.double().numpy()
    cols |= {
        "next_observation": pa.array(batch.next_obs.double().tolist(), type=pa.list_(pa.float64())),
        "done": pa.array(batch.done.numpy() > 0.5),
        "propensity": pa.array(np.exp(logp)),
        "log_density": pa.array(logp),
        "policy_version": pa.array(["behaviour"] * n),
        "arm": pa.array(["control"] * n),
        "user_id": pa.array([f"u{i % 1000}" for i in range(n)]),
        "session_id": pa.array([f"s{i // 10}" for i in range(n)]),
        "timestamp": pa.array([t0 + dt.timedelta(seconds=i) for i in range(n)], type=pa.timestamp("us", tz="UTC")),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), str(path))


# ---------------------------------------------------------------------------
# Online collection
# ---------------------------------------------------------------------------
@dataclass
class PoolStep:
    """What N environments return for one batched step."""

    next_obs: np.ndarray  # (N, O) the true s' of each transition (before any reset)
    rewards: np.ndarray  # (N, m) in TaskSpec.signals order
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    obs: np.ndarray  # (N, O) the observation to act on next (after resets)


class EnvPool(Protocol):
    """N environments stepped together; resets happen inside `step`."""

    n_envs: int

    def reset(self, seed: int) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> PoolStep: ...


class GymEnvPool:
    """N Gymnasium envs following the vector-reward convention, auto-reset; env i is seeded seed + i."""

    def __init__(self, env_fns: Sequence[Callable[[], Any]], task: TaskSpec) -> None:
        self.envs = [fn() for fn in env_fns]
        self.task = task
        self.n_envs = len(self.envs)
        self._seed = 0

    def reset(self, seed: int) -> np.ndarray:
        self._seed = seed
        return np.stack([np.asarray(e.reset(seed=seed + i)[0], dtype=np.float32) for i, e in enumerate(self.envs)])

    def _env_action(self, a: np.ndarray) -> Any:
        if self.task.continuous:
            box = self.task.action
            return np.clip(a, box.low, box.high).astype(np.float32)  # type: ignore[union-attr]
        ints = np.rint(a).astype(np.int64)
        return int(ints[0]) if self.task.action_dim == 1 else ints

    def step(self, actions: np.ndarray) -> PoolStep:
        n, m = self.n_envs, len(self.task.signals)
        next_obs = np.empty((n, self.task.obs_size), np.float32)
        obs = np.empty_like(next_obs)
        rewards = np.empty((n, m), np.float64)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(self._env_action(actions[i]))
            next_obs[i] = o
            rewards[i] = self.task.signal_vector(r, info)
            term[i], trunc[i] = bool(te), bool(tr)
            obs[i] = env.reset()[0] if (te or tr) else o
        return PoolStep(next_obs, rewards, term, trunc, obs)


@dataclass(frozen=True)
class Rollout:
    """Time-major rollout (T, N, ...) plus the per-decision mean of every signal."""

    obs: Tensor
    action: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminated: Tensor
    ends: Tensor  # terminated or truncated: cuts the λ-trace
    behaviour_log_prob: Tensor

    def flatten(self) -> TransitionBatch:
        t, n = self.obs.shape[:2]
        return TransitionBatch(
            obs=self.obs.reshape(t * n, -1),
            action=self.action.reshape(t * n, -1),
            rewards=self.rewards.reshape(t * n, -1),
            next_obs=self.next_obs.reshape(t * n, -1),
            done=self.terminated.reshape(-1),
            behaviour_log_prob=self.behaviour_log_prob.reshape(-1),
        )


class RolloutCollector:
    """Steps an EnvPool with a policy for T steps at a time, keeping the current observations between calls."""

    def __init__(self, pool: EnvPool, seed: int) -> None:
        self.pool = pool
        self.obs = pool.reset(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.transitions = 0
        # Per-row running sums of every signal and step counts of the episodes in progress; an
        # episode that ends moves to `finished` as (signal sums (m,), length) until `pop_episodes`.
        self._running: np.ndarray | None = None
        self._steps = np.zeros(pool.n_envs, dtype=np.int64)
        self.finished: list[tuple[np.ndarray, int]] = []

    def pop_episodes(self) -> list[tuple[np.ndarray, int]]:
        """Episodes ended since the last call: (undiscounted sum of every signal (m,), length)."""
        out, self.finished = self.finished, []
        return out

    def _track(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        if self._running is None:
            self._running = np.zeros_like(rewards, dtype=np.float64)
        self._running += rewards
        self._steps += 1
        for row in np.flatnonzero(ended):
            self.finished.append((self._running[row].copy(), int(self._steps[row])))
            self._running[row] = 0.0
            self._steps[row] = 0

    @staticmethod
    def _continue_next_obs(buf: dict[str, list[Any]], obs_t: Tensor) -> None:
        """The previous step's next_obs of the rows whose episode goes on is this step's observation."""
        if buf["next_obs"]:
            going_on = buf["ends"][-1] == 0
            buf["next_obs"][-1][going_on] = obs_t[going_on]

    @torch.no_grad()
    def collect(
        self,
        act: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]],
        steps: int,
        device: torch.device | str = "cpu",
        on_ends: Callable[[Tensor, torch.Generator], None] | None = None,
    ) -> Rollout:
        """`act(obs, generator) -> (action, log_prob)` on CPU tensors; the stored action is the sampled one.

        `on_ends(ended, generator)`, when given, is told after every step which rows' episodes ended
        (terminated or truncated) — e.g. to redraw per-episode exploration noise."""
        buf: dict[str, list[Any]] = {k: [] for k in ("obs", "action", "rewards", "next_obs", "term", "ends", "logp")}
        # A pool whose agents act in turn (training.rl.sim.BatchedSimPool, rank multi-agent) builds the joint
        # observation while they act: later agents' blocks exist only once the earlier ones have acted.
        in_turn = getattr(self.pool, "act_in_turn", None) if getattr(self.pool, "multi_agent", False) else None
        for _ in range(steps):
            if in_turn is None:
                obs_t = torch.from_numpy(self.obs)
                action, logp = act(obs_t, self.generator)
            else:
                joint, action, logp = in_turn(act, self.generator)
                obs_t = torch.from_numpy(joint)
                self._continue_next_obs(buf, obs_t)
            action = action.cpu()
            step = self.pool.step(action.numpy())
            buf["obs"].append(obs_t)
            buf["action"].append(action.float())
            buf["rewards"].append(torch.from_numpy(step.rewards.astype(np.float32)))
            buf["next_obs"].append(torch.from_numpy(step.next_obs))
            buf["term"].append(torch.from_numpy(step.terminated.astype(np.float32)))
            buf["ends"].append(torch.from_numpy((step.terminated | step.truncated).astype(np.float32)))
            buf["logp"].append(logp.cpu().float())
            self.obs = step.obs
            self._track(step.rewards, step.terminated | step.truncated)
            if on_ends is not None:
                on_ends(buf["ends"][-1] > 0, self.generator)
        if in_turn is not None and steps:
            # The last step's successor: the joint observation the next call's first step will build (from a
            # copy of the generator, so the next call draws the same; the actor may have changed by then).
            peek = torch.Generator().set_state(self.generator.get_state())
            self._continue_next_obs(buf, torch.from_numpy(in_turn(act, peek)[0]))
        self.transitions += steps * self.pool.n_envs
        return Rollout(
            obs=torch.stack(buf["obs"]).to(device),
            action=torch.stack(buf["action"]).to(device),
            rewards=torch.stack(buf["rewards"]).to(device),
            next_obs=torch.stack(buf["next_obs"]).to(device),
            terminated=torch.stack(buf["term"]).to(device),
            ends=torch.stack(buf["ends"]).to(device),
            behaviour_log_prob=torch.stack(buf["logp"]).to(device),
        )
