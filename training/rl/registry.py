"""The one registry of algorithms: name → config class, loss class, single- or multi-agent, data.

An algorithm file registers itself with the decorator on its loss class:

    @register("tscac", config=TSCACConfig)
    class TSCACLoss(LossModule): ...

or, for an algorithm that is not trained by gradient steps (fixed fusion's grid search),
with `register_algorithm(AlgorithmSpec(...))` and `loss=None`; an off-policy algorithm with its
own replay loop (dqn, ddpg, td3) registers `loss=None` and a `fit` the generic `train` calls. `get_algorithm(name)`
imports the built-in algorithm modules listed in `BUILTIN_MODULES` first (explicitly: no
scanning of module variables), so a name resolves however the caller got here. A new
algorithm file adds its module path to `BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

BUILTIN_MODULES: tuple[str, ...] = (
    "training.algorithms.main_only",
    "training.algorithms.bc",
    "training.algorithms.rcpo",
    "training.algorithms.tscac",
    "training.algorithms.ma_cascade",
    "training.algorithms.ma_rdpg",
    "training.algorithms.fixed_fusion",
    "training.algorithms.dqn",
    "training.algorithms.ddpg",
    "training.algorithms.marca",
    "training.algorithms.sl_mgac",
)


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the generic `train` and the CLI need to know about one algorithm."""

    name: str
    config: type[Any]
    """Frozen dataclass of hyperparameters with a `from_dict(mapping)` classmethod."""
    loss: type[Any] | None
    """`LossModule` subclass, or None for an algorithm with its own `train` (no gradient steps)."""
    multi_agent: bool = False
    """Needs a multi-agent task (TaskSpec.agents): one actor per agent."""
    data: Literal["both", "online", "offline"] = "both"
    """Where it learns from: an environment, logged transitions, or either."""
    fit: Callable[..., Any] | None = None
    """For an algorithm with its own collect-and-learn loop (off-policy: replay, target networks —
    DQN, DDPG/TD3) and `loss=None`: `fit(task, source, algo_cfg, run_cfg) -> RunResult`, called by
    the generic `train` in place of the `Trainer`."""


ALGORITHMS: dict[str, AlgorithmSpec] = {}

L = TypeVar("L")


def register_algorithm(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add `spec`; a second registration under the same name with a different spec is an error."""
    old = ALGORITHMS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"algorithm {spec.name!r} is registered twice ({old.loss} and {spec.loss})")
    ALGORITHMS[spec.name] = spec
    return spec


def register(
    name: str,
    *,
    config: type[Any],
    multi_agent: bool = False,
    data: Literal["both", "online", "offline"] = "both",
) -> Callable[[L], L]:
    """Class decorator for a loss module: registers it under `name` and sets its `algorithm` to `name`."""

    def wrap(loss_cls: L) -> L:
        loss_cls.algorithm = name  # type: ignore[attr-defined]
        register_algorithm(AlgorithmSpec(name, config, loss_cls, multi_agent, data))  # type: ignore[arg-type]
        return loss_cls

    return wrap


def load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_algorithm(name: str) -> AlgorithmSpec:
    """The registered algorithm `name`; a clear error listing the known names otherwise."""
    load_builtin()
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; registered: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def algorithm_names() -> list[str]:
    load_builtin()
    return sorted(ALGORITHMS)
