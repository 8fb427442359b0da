"""Model lifecycle: load verified versions, warm them, switch atomically, watch the registry.

A swap never makes a request fail or wait: the new version is loaded from the
registry (every file's sha256 checked), its backend is created and warmed with
a few inferences on a worker thread, and only then does the problem's
"current" pointer move — one dict assignment on the event loop. Requests that
already hold the old `LoadedPolicy` finish with it; it stays loaded for A/B
arms that name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.errors import RegistryError
from models.logging import log_event
from models.problems import ProblemSpec, get_problem
from models.registry import ArtifactManifest, LoadedVersion, ModelRegistry
from serving.backends import FloatArray, InferenceBackend, OnnxRuntimeBackend, TritonBackend, triton_model_name
from serving.errors import InferenceError, ModelNotLoadedError
from serving.experiments import CURRENT
from serving.settings import ServingSettings

log = logging.getLogger("troupe.serving.lifecycle")
WARMUP_CALLS = 3


@dataclass(frozen=True)
class LoadedPolicy:
    """One verified registry version with a ready backend per model file (joint model or per agent)."""

    spec: ProblemSpec
    manifest: ArtifactManifest
    backends: dict[str | None, InferenceBackend]  # None = the joint model.onnx; else an agent name
    extras: dict[str, Any] = field(default_factory=dict)
    """Verified side files a policy decides with (allocate/MaRCA: `cost_table`, `load_model`)."""

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def name(self) -> str:
        return self.manifest.name

    # Cached: read on every decision, and the backends of a loaded version never change.
    @functools.cached_property
    def in_process(self) -> bool:
        """Every model runs inline on the event loop (onnxruntime): an await never yields, so no timer can fire."""
        return all(isinstance(b, OnnxRuntimeBackend) for b in self.backends.values())

    @functools.cached_property
    def per_agent(self) -> bool:
        """Rank serves one file per stage when the manifest lists all three stages."""
        return self.spec.name == "rank" and all(a.name in self.backends for a in self.spec.agents)

    @functools.cached_property
    def message_size(self) -> int:
        """S of the recurrent message every model of this version takes (MA-RDPG; serving/rank_messages.py);
        0 = no message. Only the onnxruntime backend reads it from the model."""
        sizes = {int(getattr(b, "message_size", 0)) for b in self.backends.values()}
        if len(sizes) != 1:
            raise InferenceError(f"{self.spec.name}/{self.version}: its models disagree on the message size {sizes}")
        return sizes.pop()

    async def score(
        self, agent: str | None, observation: FloatArray, message: FloatArray | None = None
    ) -> dict[str, FloatArray]:
        backend = self.backends.get(agent if self.per_agent else None)
        if backend is None:
            raise InferenceError(f"{self.spec.name}/{self.version} has no model for agent {agent!r}")
        inputs = {"observation": observation} if message is None else {"observation": observation, "message": message}
        out = await backend.score(inputs)
        for name, arr in out.items():
            if not np.isfinite(arr).all():
                raise InferenceError(f"{self.spec.name}/{self.version}: output {name!r} is not finite")
        return out

    async def close(self) -> None:
        for b in self.backends.values():
            await b.close()


def _side_files(problem: str, loaded: LoadedVersion) -> dict[str, Any]:
    """MaRCA's cost table and load model, when the version ships them (sha256-checked by registry.load)."""
    from serving.allocate_marca import COST_FILE, LOAD_MODEL_FILE, MarcaCostTable
    from serving.balancer import BalancerError, load_model_from_dict

    files = loaded.manifest.files
    extras: dict[str, Any] = {}
    if problem != "allocate" or COST_FILE not in files:
        return extras
    extras["cost_table"] = MarcaCostTable.load(loaded.file(COST_FILE))
    if LOAD_MODEL_FILE in files:
        try:
            extras["load_model"] = load_model_from_dict(json.loads(loaded.file(LOAD_MODEL_FILE).read_text()))
        except (ValueError, BalancerError) as exc:
            raise RegistryError(f"{loaded.manifest.version}/{LOAD_MODEL_FILE}: {exc}") from None
    return extras


BackendFactory = Callable[[ProblemSpec, LoadedVersion, str | None], InferenceBackend]


def default_backend_factory(settings: ServingSettings) -> BackendFactory:
    """Builds the backend the settings select, for one model file of a verified version."""

    def make(spec: ProblemSpec, loaded: LoadedVersion, agent: str | None) -> InferenceBackend:
        outputs = list(spec.onnx_outputs)
        if settings.backend == "onnxruntime":
            path = loaded.model_path if agent is None else loaded.file(loaded.manifest.agents[agent])
            return OnnxRuntimeBackend(
                path,
                outputs,
                intra_op_threads=settings.ort_intra_op_threads,
                inter_op_threads=settings.ort_inter_op_threads,
                cuda=settings.ort_cuda,
            )
        protocol: Literal["http", "grpc"] = "http" if settings.backend == "triton_http" else "grpc"
        return TritonBackend(
            settings.triton_url,
            triton_model_name(spec.name, loaded.manifest.version, agent),
            outputs,
            protocol=protocol,
            # A safety net only: the per-request deadline (asyncio.timeout) cancels late calls;
            # warm-up calls have no deadline and may take a first-call second.
            timeout_s=10.0,
        )

    return make


@dataclass
class ModelManager:
    """Loaded policy versions per problem and the pointer to the one serving by default."""

    registry: ModelRegistry
    problems: list[str]
    backend_factory: BackendFactory
    on_swap: Callable[[str, str], None] | None = None  # (problem, version)
    _loaded: dict[tuple[str, str], LoadedPolicy] = field(default_factory=dict)
    _current: dict[str, str] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _watch_task: asyncio.Task[None] | None = None

    # -- queries ----------------------------------------------------------
    def current_version(self, problem: str) -> str | None:
        return self._current.get(problem)

    def get(self, problem: str, version: str = CURRENT) -> LoadedPolicy:
        v = self._current.get(problem) if version == CURRENT else version
        if v is None:
            raise ModelNotLoadedError(
                f"no policy for {problem!r} is loaded; promote one with `troupe registry promote`"
            )
        policy = self._loaded.get((problem, v))
        if policy is None:
            raise ModelNotLoadedError(
                f"{problem}/{v} is not loaded; it loads when an experiment arm or a promote names it"
            )
        return policy

    def ready(self) -> dict[str, bool]:
        return {p: p in self._current for p in self.problems}

    # -- loading ----------------------------------------------------------
    def _build(self, problem: str, version: str) -> LoadedPolicy:
        """Blocking: verify files, create backends (called on a worker thread)."""
        spec = get_problem(problem)
        loaded = self.registry.load(problem, version)
        missing = [o for o in spec.onnx_outputs if o not in {t.name for t in loaded.manifest.outputs}]
        if missing:
            raise RegistryError(f"{problem}/{version}: manifest lacks outputs {missing} required by the spec")
        if loaded.manifest.feature_service != spec.feature_service:
            # A new feature-service version means a new observation layout (e.g. slot_v2 added the live sequence).
            raise RegistryError(
                f"{problem}/{version} was built for feature service {loaded.manifest.feature_service!r}; this "
                f"server builds {spec.feature_service!r} observations ({spec.observation_size} values): "
                "retrain and register a version for it"
            )
        backends: dict[str | None, InferenceBackend] = {}
        try:
            backends[None] = self.backend_factory(spec, loaded, None)
            if problem == "rank":
                for agent in spec.agents:
                    if agent.name in loaded.manifest.agents:
                        backends[agent.name] = self.backend_factory(spec, loaded, agent.name)
        except Exception as exc:  # noqa: BLE001 — onnxruntime/Triton raise their own classes: one domain error
            raise RegistryError(
                f"{problem}/{version}: the {self._backend_name()} backend cannot load it: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from None
        policy = LoadedPolicy(spec, loaded.manifest, backends, _side_files(problem, loaded))
        try:
            policy.message_size  # noqa: B018 — refuse a version whose models disagree on the message here
        except InferenceError as exc:
            raise RegistryError(str(exc)) from None
        return policy

    def _backend_name(self) -> str:
        return getattr(self.backend_factory, "__qualname__", "inference").split(".")[0]

    async def _warm(self, policy: LoadedPolicy) -> None:
        obs = np.zeros((1, policy.spec.observation_size), dtype=np.float32)
        agents = [a.name for a in policy.spec.agents] if policy.per_agent else [None]
        message = np.zeros((1, policy.message_size), dtype=np.float32) if policy.message_size else None
        for _ in range(WARMUP_CALLS):
            for agent in agents:
                out = await policy.score(agent, obs, message)
                for name in policy.spec.onnx_outputs:
                    if name not in out or not np.all(np.isfinite(out[name])):
                        raise InferenceError(
                            f"{policy.spec.name}/{policy.version}: warm-up output {name!r} is missing or not finite"
                        )

    async def ensure_loaded(self, problem: str, version: str) -> LoadedPolicy:
        """Load and warm `version` unless it is already loaded (no switch)."""
        key = (problem, version)
        if key in self._loaded:
            return self._loaded[key]
        lock = self._locks.setdefault(problem, asyncio.Lock())
        async with lock:
            if key in self._loaded:
                return self._loaded[key]
            policy = await asyncio.to_thread(self._build, problem, version)
            try:
                await self._warm(policy)
            except InferenceError as exc:
                await policy.close()
                raise RegistryError(f"{problem}/{version} failed its warm-up inference: {exc}") from None
            except BaseException:
                await policy.close()
                raise
            self._loaded[key] = policy
            return policy

    async def activate(self, problem: str, version: str) -> LoadedPolicy:
        """Load, warm, then switch `problem` to `version`."""
        policy = await self.ensure_loaded(problem, version)
        previous = self._current.get(problem)
        self._current[problem] = version  # the switch: one assignment, after warm-up
        if previous != version:
            log_event(log, "model.swap", problem=problem, version=version, previous=previous)
            if self.on_swap is not None:
                self.on_swap(problem, version)
        return policy

    async def load_current(self) -> dict[str, str | None]:
        """At start-up: activate each problem's promoted version; a problem without one serves its default policy."""
        out: dict[str, str | None] = {}
        for problem in self.problems:
            version = await asyncio.to_thread(self.registry.current_version, problem)
            if version is None:
                log_event(log, "model.none_promoted", logging.WARNING, problem=problem)
                out[problem] = None
                continue
            try:
                await self.activate(problem, version)
            except Exception as exc:  # noqa: BLE001 — serve the default policy; the watch retries
                log_event(log, "model.load_failed", logging.ERROR, problem=problem, version=version, error=str(exc))
                out[problem] = None
                continue
            out[problem] = version
        return out

    # -- changes ------------------------------------------------------------
    async def promote(self, problem: str, version: str) -> LoadedPolicy:
        """Warm the version first, then record it in the registry, then switch."""
        policy = await self.ensure_loaded(problem, version)
        await asyncio.to_thread(self.registry.promote, problem, version)
        await self.activate(problem, version)
        return policy

    async def rollback(self, problem: str) -> LoadedPolicy:
        """Load and warm the previous version first; only then move the registry pointer and switch."""
        target = await asyncio.to_thread(self.registry.rollback_target, problem)
        await self.ensure_loaded(problem, target)
        target = await asyncio.to_thread(self.registry.rollback, problem)
        return await self.activate(problem, target)

    # -- registry watch ---------------------------------------------------
    async def poll_registry(self) -> list[tuple[str, str]]:
        """Switch every problem whose promoted version changed in the registry; returns the switches."""
        switched: list[tuple[str, str]] = []
        for problem in self.problems:
            try:
                version = await asyncio.to_thread(self.registry.current_version, problem)
                if version is not None and version != self._current.get(problem):
                    await self.activate(problem, version)
                    switched.append((problem, version))
            except Exception as exc:  # noqa: BLE001 — a bad version must not stop the watch
                log_event(log, "model.watch_error", logging.ERROR, problem=problem, error=str(exc))
        return switched

    def start_watch(self, interval_s: float) -> None:
        if interval_s <= 0 or self._watch_task is not None:
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                await self.poll_registry()

        self._watch_task = asyncio.get_running_loop().create_task(loop(), name="troupe-registry-watch")

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        for policy in self._loaded.values():
            await policy.close()
        self._loaded.clear()
        self._current.clear()
