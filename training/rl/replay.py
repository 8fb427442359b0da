"""Replay: a uniform transition buffer, an n-step writer, and sequence replay with burn-in (R2D2-style).

Everything is a dict of tensors whose leading axis is the batch, so a buffer
holds whatever an algorithm needs (observations, actions, per-agent
observations, a global state for a mixer, recurrent states) without a schema
class per algorithm. The field set and each field's trailing shape and dtype
are fixed by the first `add`; a later mismatch raises `ValueError` naming the
field.

* `ReplayBuffer(capacity)`  — ring buffer, uniform sampling with replacement
  (Mnih et al. 2015). Deviation from R2D2/Ape-X: no prioritised replay (ours:
  uniform keeps the toy-MDP results exact and the code short; a priority tree
  can replace `_indices` later).
* `NStepWriter(n, gamma)`   — turns a stream of per-step batches from N
  parallel envs into n-step transitions: reward Σ_{k<m} γ^k r_{t+k}, the
  `next_*` fields of step t+m−1, `discount` = γ^m (1 − terminated) and
  `steps` = m, with m ≤ n cut at episode ends. The learner's target is then
  y = reward + discount · V(next) — no further knowledge of n is needed.
* `SequenceWriter(length, period)` + `SequenceReplay` — fixed-length
  sequences for recurrent Q-networks (Kapturowski et al. 2019, R2D2): each
  sequence stores the recurrent state at its first step ("stored state"), the
  first `burn_in` steps only refresh that state, the rest carry the loss.
  Consecutive sequences of one episode overlap by `length − period` steps; a
  sequence never crosses an episode boundary: the episode's tail is padded
  with zeros and `mask` = 0. Deviation from R2D2: no prioritisation, no
  invertible value rescaling h(x); the stored state is the actor's state at
  collection time (as in R2D2), refreshed by burn-in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import torch
from torch import Tensor

REWARD, TERMINATED, TRUNCATED = "reward", "terminated", "truncated"


class ReplayBuffer:
    """Uniform ring-buffer replay over dicts of tensors (leading axis = batch)."""

    def __init__(self, capacity: int, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self._storage: dict[str, Tensor] = {}
        self._next = 0
        self._size = 0
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self._size

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._storage)

    def add(self, batch: Mapping[str, Tensor]) -> None:
        """Append a batch of rows; every field has the same leading size."""
        sizes = {name: t.shape[0] for name, t in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"ReplayBuffer.add: fields must share the leading (batch) size, got {sizes}")
        rows = next(iter(sizes.values()))
        if not self._storage:
            for name, t in batch.items():
                self._storage[name] = torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=self.device)
        elif set(batch) != set(self._storage):
            raise ValueError(
                f"ReplayBuffer.add: fields {sorted(batch)} differ from the buffer's {sorted(self._storage)}"
            )
        for name, t in batch.items():
            store = self._storage[name]
            if t.shape[1:] != store.shape[1:] or t.dtype != store.dtype:
                raise ValueError(
                    f"ReplayBuffer.add: field {name!r} has shape {tuple(t.shape[1:])} {t.dtype} per row, "
                    f"expected {tuple(store.shape[1:])} {store.dtype}"
                )
        if rows > self.capacity:  # only the newest `capacity` rows survive
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            rows = self.capacity
        slots = (torch.arange(rows) + self._next) % self.capacity
        for name, t in batch.items():
            self._storage[name][slots] = t.to(self.device)
        self._next = (self._next + rows) % self.capacity
        self._size = min(self._size + rows, self.capacity)

    def _indices(self, batch_size: int) -> Tensor:
        return torch.randint(0, self._size, (batch_size,), generator=self._generator)

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        """`batch_size` rows drawn uniformly with replacement."""
        if self._size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty; add transitions first")
        if batch_size < 1:
            raise ValueError(f"ReplayBuffer.sample: batch_size must be ≥ 1, got {batch_size}")
        idx = self._indices(batch_size).to(self.device)
        return {name: store[idx] for name, store in self._storage.items()}


def _broadcast_mask(mask: Tensor, like: Tensor) -> Tensor:
    """(N,) mask → shape (N, 1, …) broadcastable against `like` (N, …)."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim())).to(like)


class NStepWriter:
    """n-step transitions from a stream of steps of N parallel environments.

    `push(step)` takes one step of every env: `reward` (N,) or (N, m),
    `terminated` and `truncated` (N,) booleans, and any other fields; a field
    named `next_<x>` (e.g. `next_obs`) is taken from the bootstrap step, every
    other field from the transition's first step. It returns the n-step
    transitions that became complete (none during the first n − 1 pushes),
    `flush()` the rest at the end of collection. `gamma`: scalar or (m,).
    """

    def __init__(self, n: int, gamma: float | Tensor) -> None:
        if n < 1:
            raise ValueError(f"NStepWriter: n must be ≥ 1, got {n}")
        self.n = n
        self.gamma = gamma
        self._window: deque[dict[str, Tensor]] = deque()

    def push(self, step: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        missing = {REWARD, TERMINATED, TRUNCATED} - set(step)
        if missing:
            raise ValueError(f"NStepWriter.push: step lacks fields {sorted(missing)}")
        self._window.append(dict(step))
        if len(self._window) < self.n:
            return None
        out = self._transition_from(0)
        self._window.popleft()
        return out

    def flush(self) -> list[dict[str, Tensor]]:
        """The remaining transitions (each summing fewer than n rewards, bootstrapped as usual)."""
        out = [self._transition_from(0)]
        while len(self._window) > 1:
            self._window.popleft()
            out.append(self._transition_from(0))
        self._window.clear()
        return out if out and out[0] else []

    def _transition_from(self, start: int) -> dict[str, Tensor]:
        if not self._window:
            return {}
        steps = list(self._window)[start:]
        first = steps[0]
        reward0 = first[REWARD]
        gamma = self.gamma.to(reward0) if isinstance(self.gamma, Tensor) else torch.tensor(self.gamma).to(reward0)
        total = torch.zeros_like(reward0)
        discount = torch.ones_like(reward0)
        active = torch.ones(reward0.shape[0], dtype=torch.bool, device=reward0.device)
        taken = torch.zeros(reward0.shape[0], dtype=torch.long, device=reward0.device)
        next_fields = {k: torch.zeros_like(v) for k, v in first.items() if k.startswith("next_")}
        terminal = torch.zeros(reward0.shape[0], dtype=torch.bool, device=reward0.device)
        for k, step in enumerate(steps):
            live = _broadcast_mask(active, total)
            total = total + live * discount * step[REWARD]
            discount = torch.where(live.bool(), discount * gamma, discount)
            taken = taken + active.long()
            episode_end = step[TERMINATED].bool() | step[TRUNCATED].bool()
            stop = active & (episode_end | torch.tensor(k == len(steps) - 1) | torch.tensor(k == self.n - 1))
            for name in next_fields:
                next_fields[name] = torch.where(_broadcast_mask(stop, step[name]).bool(), step[name], next_fields[name])
            terminal = torch.where(stop, step[TERMINATED].bool(), terminal)
            active = active & ~stop
            if not active.any():
                break
        out = {k: v for k, v in first.items() if k not in (REWARD, TERMINATED, TRUNCATED) and not k.startswith("next_")}
        out.update(next_fields)
        out[REWARD] = total
        out["discount"] = discount * (1.0 - _broadcast_mask(terminal, discount))
        out["steps"] = taken
        return out


class SequenceWriter:
    """Cuts the step stream of N parallel envs into fixed-length sequences (R2D2 stored-state replay).

    `push(step, hidden)`: `step` holds one step of every env (fields (N, …),
    with `terminated` and `truncated`), `hidden` (N, S) is each env's recurrent
    state *before* this step. Returns the sequences completed by this step, a
    dict of (K, length, …) tensors plus `hidden` (K, S) — the state at each
    sequence's first step — and `mask` (K, length), or None.
    """

    def __init__(self, length: int, period: int | None = None) -> None:
        period = length if period is None else period
        if length < 1 or not 1 <= period <= length:
            raise ValueError(f"SequenceWriter: need length ≥ 1 and 1 ≤ period ≤ length, got {length}, {period}")
        self.length, self.period = length, period
        self._steps: list[list[dict[str, Tensor]]] = []
        self._hidden: list[list[Tensor]] = []
        self._uncovered: list[int] = []

    def push(self, step: Mapping[str, Tensor], hidden: Tensor) -> dict[str, Tensor] | None:
        if TERMINATED not in step or TRUNCATED not in step:
            raise ValueError("SequenceWriter.push: step needs 'terminated' and 'truncated' fields")
        num_envs = hidden.shape[0]
        if not self._steps:
            self._steps = [[] for _ in range(num_envs)]
            self._hidden = [[] for _ in range(num_envs)]
            self._uncovered = [0] * num_envs
        elif len(self._steps) != num_envs:
            raise ValueError(
                f"SequenceWriter.push: got {num_envs} envs, the writer was started with {len(self._steps)}"
            )
        emitted: list[dict[str, Tensor]] = []
        for env in range(num_envs):
            self._steps[env].append({k: v[env] for k, v in step.items()})
            self._hidden[env].append(hidden[env])
            self._uncovered[env] += 1
            episode_end = bool(step[TERMINATED][env]) or bool(step[TRUNCATED][env])
            if len(self._steps[env]) == self.length:
                emitted.append(self._sequence(env))
                del self._steps[env][: self.period]
                del self._hidden[env][: self.period]
                self._uncovered[env] = 0
            if episode_end:
                if self._uncovered[env] > 0:
                    emitted.append(self._sequence(env))
                self._steps[env], self._hidden[env], self._uncovered[env] = [], [], 0
        if not emitted:
            return None
        return {k: torch.stack([s[k] for s in emitted]) for k in emitted[0]}

    def _sequence(self, env: int) -> dict[str, Tensor]:
        steps = self._steps[env][-self.length :]
        first_hidden = self._hidden[env][-len(steps)]
        pad = self.length - len(steps)
        out = {k: torch.stack([s[k] for s in steps]) for k in steps[0]}
        if pad:
            out = {k: torch.cat([v, torch.zeros((pad, *v.shape[1:]), dtype=v.dtype)]) for k, v in out.items()}
        out["mask"] = torch.cat([torch.ones(len(steps)), torch.zeros(pad)])
        out["hidden"] = first_hidden
        return out


class SequenceReplay(ReplayBuffer):
    """Replay of fixed-length sequences; `sample` returns time-major batches with a burn-in prefix.

    Stored rows: fields (length, …), `mask` (length,), `hidden` (S,). A sample
    is (length, B, …) per field, `mask` (length, B), `hidden` (B, S); the first
    `burn_in` steps are for refreshing the state only (see
    `training.rl.recurrent.unroll_with_burn_in`), the loss uses the rest.
    """

    def __init__(self, capacity: int, length: int, burn_in: int = 0, seed: int = 0) -> None:
        if not 0 <= burn_in < length:
            raise ValueError(f"SequenceReplay: burn_in must be in [0, length={length}), got {burn_in}")
        super().__init__(capacity, seed)
        self.length, self.burn_in = length, burn_in

    def add(self, batch: Mapping[str, Tensor]) -> None:
        if "mask" not in batch or "hidden" not in batch:
            raise ValueError("SequenceReplay.add: sequences need 'mask' and 'hidden' fields (use SequenceWriter)")
        for name, t in batch.items():
            if name != "hidden" and (t.dim() < 2 or t.shape[1] != self.length):
                raise ValueError(
                    f"SequenceReplay.add: field {name!r} must be (K, length={self.length}, …), got {tuple(t.shape)}"
                )
        super().add(batch)

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        rows = super().sample(batch_size)
        return {k: (v if k == "hidden" else v.transpose(0, 1).contiguous()) for k, v in rows.items()}
