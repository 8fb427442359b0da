"""A/B experiments: deterministic arm assignment, a store fed by YAML and admin calls, and hooks.

Assignment is `bucket = int(sha256(salt + unit_id).hexdigest(), 16) mod 10,000`
and the arms own consecutive bucket ranges proportional to their weights, so
the same unit lands in the same arm in every process and on every host, and
changing weights moves only the units whose bucket changes owner.

YAML form (`TROUPE_EXPERIMENTS_FILE`)::

    experiments:
      - name: slot-exploration
        problem: slot
        salt: slot-exploration-2026-11
        arms:
          - {name: control, weight: 0.5, version: current}
          - {name: treatment, weight: 0.5, version: v2, exploration: {temperature: 0.5, epsilon: 0.05}}

An arm's `version` is a registry version of the problem, or `current` for the
promoted one. At most one running experiment per problem.

Shared by every worker and replica: with a `StateStore` attached
(`TROUPE_STATE_STORE_URL`, serving/state_store.py) the experiments live in
Redis (namespace `experiments`), the YAML file only *seeds* them (an
experiment already in Redis is left as Redis has it), every admin change is
written there under a store-wide lock (so "one running experiment per
problem" holds across processes), and each process's in-memory copy — what
the request path reads — is refreshed by change notification. Without a
store (one process, tests) the in-memory copy is the only one.

Hooks (`ExperimentHook`) let an external experimentation platform see every
assignment, decision and feedback; `ExposureLogHook` is the built-in one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.events import DecisionEvent, FeedbackEvent
from models.logging import log_event
from models.problems import problem_names
from models.registry import NAME_RE, validate_name
from serving.errors import ExperimentError, UnknownExperimentError
from serving.exploration import ExplorationConfig

if TYPE_CHECKING:
    from serving.state_store import StateStore

BUCKETS = 10_000
CURRENT = "current"
log = logging.getLogger("troupe.serving.experiments")


def bucket(salt: str, unit_id: str) -> int:
    """sha256(salt + unit id) mod 10,000 — the same number in every process."""
    return int(hashlib.sha256((salt + unit_id).encode()).hexdigest(), 16) % BUCKETS


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The registry's name rule in the schema too (the validator below stays the authority: it also refuses '..').
    name: str = Field(pattern=NAME_RE.pattern, description="arm name, logged on every decision")
    weight: float = Field(ge=0.0, description="share of traffic, relative to the other arms")
    version: str = Field(CURRENT, description="registry version of the policy, or 'current' for the promoted one")
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)

    @field_validator("name", "version")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name("name", v)  # the registry's one name check (no separators, no '..')


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    problem: str
    salt: str = Field(min_length=1, max_length=128)
    arms: list[Arm] = Field(min_length=1, max_length=20)
    status: Literal["running", "stopped"] = "running"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name("name", v)  # the registry's one name check (no separators, no '..')

    @field_validator("problem")
    @classmethod
    def _problem(cls, v: str) -> str:
        if v not in problem_names():
            raise ValueError(f"unknown problem {v!r}; known: {problem_names()}")
        return v

    @model_validator(mode="after")
    def _arms(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError("at least one arm needs a weight > 0")
        return self

    def boundaries(self) -> list[int]:
        """Upper bucket bound (exclusive) of each arm; the last is always 10,000."""
        total = sum(a.weight for a in self.arms)
        out: list[int] = []
        acc = 0.0
        for a in self.arms:
            acc += a.weight
            out.append(round(BUCKETS * acc / total))
        out[-1] = BUCKETS
        return out

    def assign(self, unit_id: str) -> Arm:
        b = bucket(self.salt, unit_id)
        for arm, bound in zip(self.arms, self.boundaries(), strict=True):
            if b < bound:
                return arm
        return self.arms[-1]  # unreachable: the last bound is BUCKETS


class ExperimentHook(Protocol):
    """Called synchronously on the request path: keep it cheap (queue work for a thread if needed)."""

    def on_assign(self, experiment: Experiment, arm: Arm, unit_id: str) -> None: ...

    def on_decision(self, event: DecisionEvent) -> None: ...

    def on_feedback(self, event: FeedbackEvent) -> None: ...


@dataclass
class ExposureLogHook:
    """Logs `ab.exposure` the first time a unit is exposed to an arm (bounded memory of units seen)."""

    max_units: int = 100_000
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("troupe.serving.exposures"))
    _seen: OrderedDict[tuple[str, str, str], None] = field(default_factory=OrderedDict)
    exposures_logged: int = 0

    def on_assign(self, experiment: Experiment, arm: Arm, unit_id: str) -> None:
        return None

    def on_decision(self, event: DecisionEvent) -> None:
        if event.experiment is None or event.arm is None or not event.exposed:
            return
        key = (event.experiment, event.arm, event.user_id)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > self.max_units:
            self._seen.popitem(last=False)
        self.exposures_logged += 1
        log_event(
            self.logger,
            "ab.exposure",
            experiment=event.experiment,
            arm=event.arm,
            unit_id=event.user_id,
            request_id=event.request_id,
            policy_version=event.policy_version,
        )

    def on_feedback(self, event: FeedbackEvent) -> None:
        return None


@dataclass
class HookSet:
    """Runs every hook; a hook that raises is logged and counted, never fails a decision."""

    hooks: list[ExperimentHook] = field(default_factory=list)
    on_error: Callable[[str], None] | None = None

    def _call(self, method: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:  # noqa: BLE001 — user code must not fail a decision
                name = type(hook).__name__
                log.exception("ab.hook_error", extra={"fields": {"hook": name, "method": method}})
                if self.on_error is not None:
                    self.on_error(name)

    def on_assign(self, experiment: Experiment, arm: Arm, unit_id: str) -> None:
        self._call("on_assign", experiment, arm, unit_id)

    def on_decision(self, event: DecisionEvent) -> None:
        self._call("on_decision", event)

    def on_feedback(self, event: FeedbackEvent) -> None:
        self._call("on_feedback", event)


NAMESPACE = "experiments"


@dataclass
class ExperimentStore:
    """Experiments by name; at most one running per problem. Shared through `state` when one is attached."""

    _experiments: dict[str, Experiment] = field(default_factory=dict)
    _running: dict[str, str] = field(default_factory=dict)  # problem → experiment name
    _state: StateStore | None = None

    # -- the shared store ----------------------------------------------------------
    def attach(self, state: StateStore) -> ExperimentStore:
        """Share through `state`: seed it with what this store holds (existing names win), then follow it."""
        state.cache(NAMESPACE)
        seeds = list(self._experiments.values())
        self._state = state
        state.watch(NAMESPACE, lambda _name, _value: self._rebuild())
        with state.lock(NAMESPACE):
            state.reload()
            current = [Experiment.model_validate(v) for v in state.items(NAMESPACE).values()]
            running = {e.problem for e in current if e.status == "running"}
            for exp in seeds:
                if exp.status == "running" and exp.problem in running:
                    exp = exp.model_copy(update={"status": "stopped"})  # Redis already runs one for it
                if state.set(NAMESPACE, exp.name, exp.model_dump(mode="json"), only_new=True):
                    running |= {exp.problem} if exp.status == "running" else set()
        self._rebuild()
        return self

    def _rebuild(self) -> None:
        """The in-memory copy from the store's cache (listener thread or after our own write)."""
        assert self._state is not None
        experiments: dict[str, Experiment] = {}
        for name, raw in self._state.items(NAMESPACE).items():
            try:
                experiments[name] = Experiment.model_validate(raw)
            except ValidationError as err:
                log_event(log, "experiments.invalid_in_store", logging.ERROR, name=name, error=str(err)[:300])
        running = {e.problem: e.name for e in experiments.values() if e.status == "running"}
        # Two assignments, experiments first: a reader may see the new experiments with the old
        # running map for an instant, never a running name without its experiment.
        self._experiments = experiments
        self._running = running

    def _write(self, exp: Experiment) -> Experiment:
        if self._state is None:
            self._experiments[exp.name] = exp
            if exp.status == "running":
                self._running[exp.problem] = exp.name
            elif self._running.get(exp.problem) == exp.name:
                del self._running[exp.problem]
        else:
            self._state.set(NAMESPACE, exp.name, exp.model_dump(mode="json"))
        return exp

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the store-wide lock and read the latest state before a change (no-op without a store)."""
        if self._state is None:
            yield
            return
        with self._state.lock(NAMESPACE):
            self._state.reload()
            self._rebuild()
            yield

    @classmethod
    def from_yaml(cls, path: Path) -> ExperimentStore:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ExperimentError(f"{path}: cannot read the experiments file: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("experiments", []), list):
            raise ExperimentError(f"{path}: expected a mapping with an 'experiments' list")
        store = cls()
        for i, raw in enumerate(data.get("experiments", [])):
            try:
                store.create(Experiment.model_validate(raw))
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ExperimentError(f"{path}: experiments[{i}].{loc}: {first['msg']}") from None
        return store

    def all(self) -> list[Experiment]:
        return list(self._experiments.values())

    def get(self, name: str) -> Experiment:
        try:
            return self._experiments[name]
        except KeyError:
            raise UnknownExperimentError(f"no experiment {name!r}; defined: {sorted(self._experiments)}") from None

    def running_for(self, problem: str) -> Experiment | None:
        name = self._running.get(problem)
        return self._experiments.get(name) if name is not None else None

    def create(self, exp: Experiment) -> Experiment:
        with self._changing():
            if exp.name in self._experiments:
                raise ExperimentError(f"experiment {exp.name!r} already exists; update its weights or stop it")
            if exp.status == "running" and exp.problem in self._running:
                raise ExperimentError(
                    f"problem {exp.problem!r} already runs experiment {self._running[exp.problem]!r}; stop it first"
                )
            return self._write(exp)

    def update_weights(self, name: str, weights: dict[str, float]) -> Experiment:
        with self._changing():
            return self._update_weights(name, weights)

    def _update_weights(self, name: str, weights: dict[str, float]) -> Experiment:
        exp = self.get(name)
        unknown = sorted(set(weights) - {a.name for a in exp.arms})
        if unknown:
            raise ExperimentError(f"experiment {name!r} has no arms {unknown}; arms: {[a.name for a in exp.arms]}")
        arms = [a.model_copy(update={"weight": weights.get(a.name, a.weight)}) for a in exp.arms]
        try:
            updated = Experiment.model_validate({**exp.model_dump(), "arms": [a.model_dump() for a in arms]})
        except ValidationError as err:
            raise ExperimentError(f"experiment {name!r}: {err.errors()[0]['msg']}") from None
        return self._write(updated)

    def stop(self, name: str) -> Experiment:
        with self._changing():
            exp = self.get(name)
            return self._write(exp.model_copy(update={"status": "stopped"}))

    def versions(self, problem: str) -> Iterable[str]:
        """Policy versions the running experiment of `problem` needs loaded."""
        exp = self.running_for(problem)
        return [] if exp is None else [a.version for a in exp.arms]
