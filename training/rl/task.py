"""`TaskSpec`: what a learner must know about an environment, for any env that follows the convention.

The vector-reward convention (issue 3): `env.step` returns the main signal as the
scalar reward and every signal in `info["signals"]` (name → value). A TaskSpec
lists those signals in a fixed order — main first — each with its own discount
γ, the constraints on auxiliary signals (per-decision means, as in
`models.problems.Constraint`), the observation size and the action space. It is
built from a Troupe problem spec (`TaskSpec.from_problem`) or by hand for any
other environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.problems import BoxAction, Constraint, DiscreteAction, MultiDiscreteAction, ProblemSpec


@dataclass(frozen=True)
class TaskSignal:
    """One entry of the reward vector."""

    name: str
    """Key in `info["signals"]` (and column suffix `reward_<name>` in datasets)."""
    discount: float
    """γ of this signal's critic, in [0, 1)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TaskSignal.name: must be a non-empty string")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"TaskSignal {self.name!r}: discount must be in [0, 1), got {self.discount}")


@dataclass(frozen=True)
class AgentSlice:
    """One agent of a multi-agent task: which part of the joint observation and action is its own."""

    name: str
    obs_size: int
    action_size: int

    def __post_init__(self) -> None:
        if self.obs_size < 1 or self.action_size < 1:
            raise ValueError(f"AgentSlice {self.name!r}: obs_size and action_size must be >= 1")


@dataclass(frozen=True)
class TaskSpec:
    """Signals (main first), constraints, observation size, action space (and agents, for CTDE)."""

    obs_size: int
    """Length of the flat float32 observation (the joint observation for multi-agent tasks)."""
    action: BoxAction | DiscreteAction | MultiDiscreteAction
    """Continuous box (Gaussian actor), discrete or multi-discrete (factorised categorical actor)."""
    signals: tuple[TaskSignal, ...]
    """Reward signals; signals[0] is the main signal (the scalar reward)."""
    constraints: tuple[Constraint, ...] = ()
    """Per-decision mean of a signal >= / <= a threshold."""
    agents: tuple[AgentSlice, ...] = ()
    """Multi-agent tasks: agents in order; joint obs/action are their concatenation (box components,
    or the components of a multi-discrete action: agent k owns the next `action_size` entries of nvec)."""
    name: str = "task"

    def __post_init__(self) -> None:
        if self.obs_size < 1:
            raise ValueError(f"TaskSpec.obs_size: must be >= 1, got {self.obs_size}")
        if not isinstance(self.action, BoxAction | DiscreteAction | MultiDiscreteAction):
            raise ValueError(
                "TaskSpec.action: expected BoxAction, DiscreteAction or MultiDiscreteAction, "
                f"got {type(self.action).__name__}"
            )
        if not self.signals:
            raise ValueError("TaskSpec.signals: at least the main signal is required")
        names = [s.name for s in self.signals]
        if len(set(names)) != len(names):
            raise ValueError(f"TaskSpec.signals: duplicate names in {names}")
        for c in self.constraints:
            if c.signal not in names:
                raise ValueError(f"TaskSpec.constraints: unknown signal {c.signal!r}; signals are {names}")
            if c.signal == names[0]:
                raise ValueError(f"TaskSpec.constraints: the main signal {c.signal!r} cannot be constrained")
        if self.agents:
            if sum(a.obs_size for a in self.agents) != self.obs_size:
                raise ValueError("TaskSpec.agents: agent obs sizes must add up to obs_size")
            # An agent's action_size counts box components or discrete components (columns of the stored action).
            if isinstance(self.action, DiscreteAction):
                raise ValueError(
                    "TaskSpec.agents: a joint DiscreteAction has one component; give a MultiDiscreteAction "
                    "with one component per agent action column instead"
                )
            if sum(a.action_size for a in self.agents) != self.action_dim:
                raise ValueError(
                    f"TaskSpec.agents: agent action sizes {[a.action_size for a in self.agents]} must add up to "
                    f"the joint action's {self.action_dim} components"
                )

    # -- views ---------------------------------------------------------------
    @property
    def main_signal(self) -> str:
        return self.signals[0].name

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    @property
    def discounts(self) -> tuple[float, ...]:
        return tuple(s.discount for s in self.signals)

    @property
    def continuous(self) -> bool:
        return isinstance(self.action, BoxAction)

    @property
    def action_dim(self) -> int:
        """Width of the stored action: box size, 1 for a discrete index, one column per multi-discrete component."""
        if isinstance(self.action, BoxAction):
            return self.action.size
        return len(self.nvec)

    @property
    def nvec(self) -> tuple[int, ...]:
        """Choices per component of a (multi-)discrete action: (n,) for a discrete one."""
        if isinstance(self.action, DiscreteAction):
            return (self.action.n,)
        if isinstance(self.action, MultiDiscreteAction):
            return tuple(self.action.nvec)
        raise ValueError(f"task {self.name!r}: a continuous action has no nvec")

    @property
    def constrained_signals(self) -> tuple[int, ...]:
        """Index into `signals` of every constrained auxiliary signal, in constraint order."""
        return tuple(self.signal_names.index(c.signal) for c in self.constraints)

    def constraint_sign(self, c: Constraint) -> float:
        """+1 when more of the signal is better (>=), −1 when less is (<=)."""
        return 1.0 if c.direction == ">=" else -1.0

    def constraint_thresholds(self) -> Any:
        """Thresholds in constraint order, a float64 tensor (k,)."""
        import torch

        return torch.as_tensor([c.threshold for c in self.constraints], dtype=torch.float64)

    def constraint_senses(self) -> Any:
        """+1 (">=") / −1 ("<=") in constraint order, a float64 tensor (k,)."""
        import torch

        return torch.as_tensor([self.constraint_sign(c) for c in self.constraints], dtype=torch.float64)

    def signal_vector(self, reward: float, info: Mapping[str, Any]) -> np.ndarray:
        """The reward vector of one step in `signals` order, read from `info["signals"]`."""
        sig = info.get("signals")
        if not isinstance(sig, Mapping):
            raise KeyError(
                'step info has no "signals" mapping; the vector-reward convention needs '
                'info["signals"] = {name: value} for every signal of the task'
            )
        out = np.empty(len(self.signals), dtype=np.float64)
        for i, s in enumerate(self.signals):
            if s.name in sig:
                out[i] = float(sig[s.name])
            elif i == 0:
                out[i] = float(reward)  # the scalar reward *is* the main signal
            else:
                raise KeyError(f'info["signals"] lacks {s.name!r}; it has {sorted(sig)}')
        return out

    # -- constructors ----------------------------------------------------------
    @classmethod
    def from_problem(cls, spec: ProblemSpec, multi_agent: bool = False) -> TaskSpec:
        """The task of a Troupe problem spec (main signal first, its constraints, its action space)."""
        if not isinstance(spec.action, BoxAction | DiscreteAction | MultiDiscreteAction):
            raise ValueError(f"problem {spec.name!r}: action {spec.action.kind!r} is not supported by these learners")
        ordered = sorted(spec.signals, key=lambda s: not s.main)
        signals = tuple(TaskSignal(s.name, s.discount) for s in ordered)
        agents: tuple[AgentSlice, ...] = ()
        obs_size = spec.observation_size
        if multi_agent:
            if not spec.agents:
                raise ValueError(f"problem {spec.name!r} has no multi-agent view")
            agents = tuple(AgentSlice(a.name, a.observation_size, a.action.flat_size) for a in spec.agents)
            obs_size = sum(a.obs_size for a in agents)
        return cls(
            obs_size=obs_size,
            action=spec.action,
            signals=signals,
            constraints=spec.constraints,
            agents=agents,
            name=spec.name,
        )


def constraint_report(task: TaskSpec, signal_means: Sequence[float]) -> dict[str, float]:
    """Per constraint: its value, and its slack (`functional.constraint_slack`: > 0 means satisfied)."""
    import torch

    from training.rl.functional import constraint_slack

    out: dict[str, float] = {}
    if not task.constraints:
        return out
    values = torch.as_tensor([float(signal_means[i]) for i in task.constrained_signals], dtype=torch.float64)
    slack = constraint_slack(values, task.constraint_thresholds(), task.constraint_senses()).tolist()
    for c, v, s in zip(task.constraints, values.tolist(), slack, strict=True):
        out[f"constraint_{c.signal}"] = v
        out[f"constraint_slack_{c.signal}"] = s
    return out
