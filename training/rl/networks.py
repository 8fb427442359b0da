"""Actors and per-signal critics.

Actors expose one interface (`log_prob`, `sample`, `mode`, `export_module`) so a
learner never branches on the action type except where the math differs (the
exact discrete KL of TSCAC's stage two).

* `GaussianActor`  — diagonal Gaussian; mean squashed into the action box by a
  sigmoid (the ONNX "action_mean" is already in bounds), state-independent
  log-std squashed into [log_std_min, log_std_max] (bounded without clamps so
  gradients never vanish).
* `CategoricalActor` — logits over n actions, or one set per component of a
  multi-discrete action (factorised).
* `JointGaussianActor` — one GaussianActor per agent on its own slice of the
  joint observation (CTDE: decentralised execution); log π of the joint action
  is the sum of the agents' log-probs.
* `SignalCritics` — one independent MLP per reward signal (TSCAC: separate
  critics track their own returns better than one shared critic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from training.rl.task import TaskSpec


def mlp(in_size: int, out_size: int, hidden: Sequence[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Fully connected network; the last layer is linear with small initial weights (near-neutral start)."""
    layers: list[nn.Module] = []
    prev = in_size
    for h in hidden:
        layers += [nn.Linear(prev, h), activation()]
        prev = h
    last = nn.Linear(prev, out_size)
    nn.init.uniform_(last.weight, -3e-3, 3e-3)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


_LOG_2PI = math.log(2.0 * math.pi)


class _GaussianPolicy:
    """Distribution methods of an actor whose forward(obs) returns (mean, log_std), each (B, A)."""

    if TYPE_CHECKING:  # nn.Module provides __call__ at run time; a real method here would shadow it

        def __call__(self, obs: Tensor) -> tuple[Tensor, Tensor]: ...

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        mean, log_std = self(obs)
        return gaussian_log_prob(action, mean, log_std)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Sampled action (B, A) and its log-prob (B,). Not clipped: the env clips (see data.py)."""
        mean, log_std = self(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        action = mean + noise * log_std.exp()
        return action, gaussian_log_prob(action, mean, log_std)

    def mode(self, obs: Tensor) -> Tensor:
        return self(obs)[0]

    def entropy(self, obs: Tensor) -> Tensor:
        _, log_std = self(obs)
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    def export_module(self) -> nn.Module:
        """The module whose forward(observation) gives the ONNX outputs (action_mean, action_log_std)."""
        return self


class GaussianActor(_GaussianPolicy, nn.Module):
    """π(a|s) = N(low + (high − low)·sigmoid(f(s)), diag σ²), σ state-independent."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        low: float,
        high: float,
        hidden: Sequence[int],
        init_mean: Sequence[float] | None = None,
        init_std: float = 0.1,
        log_std_bounds: tuple[float, float] = (-5.0, 0.5),
    ) -> None:
        super().__init__()
        self.net = mlp(obs_size, action_size, hidden)
        self.low, self.high = float(low), float(high)
        self.log_std_min, self.log_std_max = log_std_bounds
        span = self.log_std_max - self.log_std_min
        frac = (math.log(init_std) - self.log_std_min) / span
        frac = min(max(frac, 1e-3), 1 - 1e-3)
        self.log_std_logit = nn.Parameter(torch.full((action_size,), math.log(frac / (1 - frac))))
        if init_mean is not None:
            # Start at a known-good action (e.g. the problem's default fusion weights):
            # the last layer's bias is the logit of the initial mean.
            m = torch.as_tensor(list(init_mean), dtype=torch.float32)
            p = ((m - self.low) / (self.high - self.low)).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                self.net[-1].bias.copy_(torch.log(p / (1 - p)))
        self.action_size = action_size

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mean (B, A) in [low, high], log_std (B, A))."""
        mean = self.low + (self.high - self.low) * torch.sigmoid(self.net(obs))
        log_std = self.log_std_min + (self.log_std_max - self.log_std_min) * torch.sigmoid(self.log_std_logit)
        # `mean * 0 +` broadcasts σ to the batch with a dynamic batch axis in ONNX.
        return mean, mean * 0.0 + log_std


def gaussian_log_prob(action: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(action; mean, diag exp(log_std)²) summed over the last axis → (B,)."""
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)


class CategoricalActor(nn.Module):
    """Factorised categorical over one or more components: π(a|s) = Π_k softmax(f_k(s))_{a_k}.

    One component (`nvec=(n,)`) is the plain categorical over n actions; several
    (`allocate`'s multi-discrete action) share one network whose output is split
    per component. Actions are stored as float columns (B, len(nvec)). The
    forward pass returns every component's log-probabilities side by side
    (B, Σ nvec), so Σ_columns p·(log p − log q) is the KL and −Σ p·log p the
    entropy of the whole factorised distribution.
    """

    def __init__(self, obs_size: int, nvec: int | Sequence[int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.nvec = (int(nvec),) if isinstance(nvec, int) else tuple(int(n) for n in nvec)
        if not self.nvec or min(self.nvec) < 2:
            raise ValueError(f"CategoricalActor.nvec: every component needs >= 2 actions, got {self.nvec}")
        self.net = mlp(obs_size, sum(self.nvec), hidden)

    def forward(self, obs: Tensor) -> Tensor:
        """log π_k(·|s) of every component k, side by side: shape (B, Σ nvec)."""
        logits = torch.split(self.net(obs), self.nvec, dim=-1)
        return torch.cat([torch.log_softmax(part, dim=-1) for part in logits], dim=-1)

    def log_probs_all(self, obs: Tensor) -> Tensor:
        return self(obs)

    def _columns(self, action: Tensor) -> Tensor:
        """Column in the (B, Σ nvec) output of each component's chosen action, (B, K) long."""
        idx = action.reshape(action.shape[0], -1)[:, : len(self.nvec)].long()
        offsets = torch.as_tensor([0, *self.nvec[:-1]], device=action.device).cumsum(0)
        return idx + offsets

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        return self(obs).gather(1, self._columns(action)).sum(-1)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return self.draw(self(obs), generator)

    def draw(self, log_probs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(action, its log-probability) from this actor's output `log_probs`: one draw per component."""
        parts = torch.split(log_probs, self.nvec, dim=-1)
        idx = torch.cat([torch.multinomial(p.exp(), 1, generator=generator) for p in parts], dim=-1)
        action = idx.to(log_probs.dtype)
        return action, log_probs.gather(1, self._columns(action)).sum(-1)

    def mode(self, obs: Tensor) -> Tensor:
        parts = torch.split(self(obs), self.nvec, dim=-1)
        return torch.stack([p.argmax(-1) for p in parts], dim=-1).to(obs.dtype)

    def entropy(self, obs: Tensor) -> Tensor:
        logp = self(obs)
        return -(logp.exp() * logp).sum(-1)

    def export_module(self) -> nn.Module:
        return _LogitsHead(self)


class _LogitsHead(nn.Module):
    def __init__(self, actor: CategoricalActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: Tensor) -> Tensor:
        return self.actor(obs)


class JointGaussianActor(_GaussianPolicy, nn.Module):
    """Decentralised actors: agent k sees only its slice of the joint observation and acts on its slice."""

    def __init__(
        self,
        obs_sizes: Sequence[int],
        action_sizes: Sequence[int],
        low: float,
        high: float,
        hidden: Sequence[int],
        init_mean: Sequence[float] | None = None,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.obs_sizes, self.action_sizes = list(obs_sizes), list(action_sizes)
        means: list[Sequence[float] | None] = [None] * len(obs_sizes)
        if init_mean is not None:
            start = 0
            for k, a in enumerate(action_sizes):
                means[k] = list(init_mean)[start : start + a]
                start += a
        self.agents = nn.ModuleList(
            GaussianActor(o, a, low, high, hidden, means[k], init_std)
            for k, (o, a) in enumerate(zip(obs_sizes, action_sizes, strict=True))
        )
        self.action_size = sum(action_sizes)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        parts = torch.split(obs, self.obs_sizes, dim=-1)
        outs = [agent(o) for agent, o in zip(self.agents, parts, strict=True)]
        return torch.cat([m for m, _ in outs], -1), torch.cat([s for _, s in outs], -1)


Actor = GaussianActor | CategoricalActor | JointGaussianActor


def make_actor(
    task: TaskSpec, hidden: Sequence[int], init_mean: Sequence[float] | None = None, init_std: float = 0.1
) -> Actor:
    """The actor family the task's action space calls for."""
    a = task.action
    if task.agents:
        assert not isinstance(a, int)
        return JointGaussianActor(
            [g.obs_size for g in task.agents],
            [g.action_size for g in task.agents],
            a.low,  # type: ignore[union-attr]
            a.high,  # type: ignore[union-attr]
            hidden,
            init_mean,
            init_std,
        )
    if task.continuous:
        return GaussianActor(task.obs_size, task.action_dim, a.low, a.high, hidden, init_mean, init_std)  # type: ignore[union-attr]
    return CategoricalActor(task.obs_size, task.nvec, hidden)


class SignalCritics(nn.Module):
    """One independent MLP per reward signal: input (B, in_size) → (B, m) or (B, m, out_per_signal)."""

    def __init__(self, in_size: int, n_signals: int, hidden: Sequence[int], out_per_signal: int = 1) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp(in_size, out_per_signal, hidden, nn.ReLU) for _ in range(n_signals))
        for h in self.heads:  # critics need a normal-scale output layer, unlike actors
            nn.init.xavier_uniform_(h[-1].weight)
        self.out_per_signal = out_per_signal

    def forward(self, x: Tensor) -> Tensor:
        out = torch.stack([h(x) for h in self.heads], dim=1)
        return out[..., 0] if self.out_per_signal == 1 else out
