"""Online user features: Feast by the problem's feature service, a TTL cache, and documented defaults.

`FeatureReader` is the small interface the API depends on; `FeastFeatureReader`
implements it with `FeatureStore.get_online_features(features=<feature
service>, ...)`. `OnlineFeatures` adds what serving needs on top:

* a TTL cache (`TROUPE_FEATURE_CACHE_TTL_S`, default 30 s): the user features
  are 7-day aggregates materialized at most hourly, so reusing a read for
  seconds changes nothing while keeping Feast's Python overhead off most
  requests;
* stale-while-revalidate: an entry past its TTL is still served while one
  background read refreshes it (up to `TROUPE_FEATURE_CACHE_MAX_STALE_S`, then
  the request waits for a fresh read), so a known user's decision never waits
  on the online store — a Feast SQLite read costs ~0.13 ms of CPU here, a
  Redis one adds a network round trip. Each entry's TTL is also shortened by
  a random 0–20 %: users first seen together would otherwise expire together;
* one read per user at a time (concurrent misses share it), on a worker
  thread, so a slow online store never blocks the event loop;
* a failed read (store down) serves the stale entry if there is one, else the
  defaults below; it is counted (`on_read_error`), logged, never fails the
  decision, and that user's store reads pause for `read_retry_s`;
* defaults for a user the store does not know, each counted in
  `troupe_feature_defaults_total{problem, feature}`:

  ====================  =============================  ==========================================
  feature               default                        why
  ====================  =============================  ==========================================
  user_activity_group   "medium" (index 1)             the middle group; no evidence either way
  user_recent_rates     0 for all six rates            a new user has no recent interactions
  user_live_affinity    (0, 0)                         no live watch time, no live exposure yet
  user_live_sequence    (0, 0) × 5                     no live exposure yet: every pair is padding
  ====================  =============================  ==========================================

`user_live_sequence` is stored as the user's last 5 live exposures, most recent
first, each (live watch seconds, Unix time of the exposure in seconds); the
decision turns the times into seconds since (models/observations.py
`live_sequence_features`), so a time of 0 — padding — is older than the 7-day
horizon and reads as no exposure.

Features sent in the request (`user_features`) override stored ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.logging import log_event
from models.problems import ACTIVITY_GROUPS, PROBLEMS, SLOT_LIVE_SEQUENCE_LENGTH, get_problem

log = logging.getLogger("troupe.serving.features")

FloatArray = npt.NDArray[np.float32]

USER_FEATURE_SIZES: dict[str, int] = {
    "user_activity_group": 1,
    "user_recent_rates": 6,
    "user_live_affinity": 2,
    "user_live_sequence": 2 * SLOT_LIVE_SEQUENCE_LENGTH,
}
DEFAULT_ACTIVITY_GROUP = ACTIVITY_GROUPS.index("medium")
USER_FEATURE_DEFAULTS: dict[str, tuple[float, ...]] = {
    "user_activity_group": (float(DEFAULT_ACTIVITY_GROUP),),
    "user_recent_rates": (0.0,) * 6,
    "user_live_affinity": (0.0, 0.0),
    "user_live_sequence": (0.0,) * (2 * SLOT_LIVE_SEQUENCE_LENGTH),
}
# Which stored user features each problem's observation uses.
PROBLEM_USER_FEATURES: dict[str, tuple[str, ...]] = {
    "rank": ("user_activity_group", "user_recent_rates"),
    "slot": ("user_activity_group", "user_recent_rates", "user_live_affinity", "user_live_sequence"),
    "allocate": ("user_activity_group",),
}
ENTITY_KEY = "user_id"


class FeatureReader(Protocol):
    """Reads one user's stored features by feature service; None for a feature the store lacks."""

    def read(self, feature_service: str, user_id: str) -> dict[str, Any]: ...

    def ping(self) -> bool: ...


class FeastFeatureReader:
    """Feast online store (SQLite by default, Redis in production) behind `FeatureReader`."""

    def __init__(self, repo_path: Path) -> None:
        from feast import FeatureStore

        self.store = FeatureStore(repo_path=str(repo_path))
        self._services: dict[str, Any] = {}

    def _service(self, name: str) -> Any:
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    def read(self, feature_service: str, user_id: str) -> dict[str, Any]:
        resp = self.store.get_online_features(
            features=self._service(feature_service), entity_rows=[{ENTITY_KEY: user_id}]
        ).to_dict()
        return {k: v[0] for k, v in resp.items() if k != ENTITY_KEY}

    def ping(self) -> bool:
        for name in sorted({spec.feature_service for spec in PROBLEMS.values()}):
            try:
                self._service(name)
                return True
            except Exception:  # noqa: BLE001 — any failure means "not reachable"
                continue
        return False


def _as_vector(name: str, value: Any, stored: Mapping[str, Any]) -> tuple[float, ...] | None:
    """A stored feature as a float tuple of the expected size, or None when absent or malformed."""
    size = USER_FEATURE_SIZES[name]
    if name == "user_activity_group":
        if value is None:
            return None
        if isinstance(value, str):
            return (float(ACTIVITY_GROUPS.index(value)),) if value in ACTIVITY_GROUPS else None
        idx = int(value)
        return (float(idx),) if 0 <= idx < len(ACTIVITY_GROUPS) else None
    if value is None:
        # Feature views may store a vector as scalar columns name_0 … name_{n-1}.
        parts = [stored.get(f"{name}_{i}") for i in range(size)]
        if any(p is None for p in parts):
            return None
        value = parts
    vec = tuple(float(v) for v in value) if isinstance(value, Sequence | np.ndarray) else (float(value),)
    if len(vec) != size or not all(np.isfinite(vec)):
        return None
    return vec


@dataclass(frozen=True)
class UserFeatures:
    values: dict[str, tuple[float, ...]]
    defaulted: tuple[str, ...]

    @property
    def activity_group(self) -> int:
        return int(self.values["user_activity_group"][0])

    def vector(self, name: str) -> FloatArray:
        return np.asarray(self.values[name], dtype=np.float32)


@dataclass
class OnlineFeatures:
    """Cached, non-blocking user-feature reads with documented defaults."""

    reader: FeatureReader | None
    ttl_s: float = 30.0
    max_entries: int = 100_000
    max_stale_s: float = 300.0
    """How long past its TTL an entry may still be served while a background read refreshes it."""
    ttl_jitter: float = 0.2
    """Each entry's TTL is shortened by a random fraction in [0, ttl_jitter) so expiries spread out."""
    read_retry_s: float = 5.0
    """After a failed read, what the user had (or the defaults) is kept this long before the store is
    tried again: an outage costs one failed read per user per interval, not one per request."""
    on_default: Callable[[str, str], None] | None = None  # (problem, feature) → count it
    on_read_error: Callable[[str], None] | None = None  # (feature service) → count it
    clock: Callable[[], float] = time.monotonic
    # (service, user) → (fresh until, stored dict), least recently read first.
    _cache: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = field(default_factory=OrderedDict)
    # (service, user) → the read under way; concurrent misses and refreshes share it.
    _inflight: dict[tuple[str, str], asyncio.Task[dict[str, Any]]] = field(default_factory=dict)
    # (problem, user) → (the stored dict it was resolved from, the result). Resolving
    # (_as_vector per feature) cost more than the cache lookup itself; a request
    # without overrides reuses it while the cache serves the same stored dict.
    _resolved: dict[tuple[str, str], tuple[dict[str, Any], UserFeatures]] = field(default_factory=dict)
    _jitter: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        for name in ("ttl_s", "max_stale_s", "read_retry_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"OnlineFeatures.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ttl_jitter < 1:
            raise ValueError(f"OnlineFeatures.ttl_jitter must be in [0, 1), got {self.ttl_jitter}")

    @property
    def _caching(self) -> bool:
        return self.ttl_s > 0 and self.max_entries > 0

    async def _stored(self, service: str, user_id: str) -> dict[str, Any]:
        if self.reader is None:
            return {}
        key = (service, user_id)
        hit = self._cache.get(key)
        if hit is not None:
            fresh_until, stored = hit
            now = self.clock()
            if now < fresh_until:
                return stored
            if now < fresh_until + self.max_stale_s:
                self._read(key)  # refresh in the background; this request keeps the stale entry
                return stored
        try:
            return await asyncio.shield(self._read(key))
        except Exception:  # noqa: BLE001 — logged and counted by _fetch; the defaults answer
            return hit[1] if hit is not None else {}

    def _read(self, key: tuple[str, str]) -> asyncio.Task[dict[str, Any]]:
        """The read of `key` under way, or a new one (single flight per user)."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key))
            self._inflight[key] = task

            def done(t: asyncio.Task[dict[str, Any]]) -> None:
                self._inflight.pop(key, None)
                if not t.cancelled():
                    t.exception()  # retrieved: a refresh nobody awaits failed; _fetch logged and counted it

            task.add_done_callback(done)
        return task

    async def _fetch(self, key: tuple[str, str]) -> dict[str, Any]:
        assert self.reader is not None
        service, user_id = key
        try:
            stored = await asyncio.to_thread(self.reader.read, service, user_id)
        except Exception as exc:
            log_event(log, "features.read_error", logging.WARNING, feature_service=service, error=str(exc))
            if self.on_read_error is not None:
                self.on_read_error(service)
            if self._caching:
                hit = self._cache.get(key)
                self._cache[key] = (self.clock() + self.read_retry_s, hit[1] if hit is not None else {})
            raise
        if self._caching:
            ttl = self.ttl_s * (1.0 - self.ttl_jitter * self._jitter.random())
            self._cache[key] = (self.clock() + ttl, stored)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return stored

    async def get(self, problem: str, user_id: str, overrides: Mapping[str, Any] | None = None) -> UserFeatures:
        """The user features `problem` needs: request overrides, else the store, else the defaults."""
        names = PROBLEM_USER_FEATURES[problem]
        overrides = overrides or {}
        need_store = any(overrides.get(n) is None for n in names)
        stored = await self._stored(get_problem(problem).feature_service, user_id) if need_store else {}
        memo_key = (problem, user_id)
        if not overrides and self.reader is not None:
            memo = self._resolved.get(memo_key)
            if memo is not None and memo[0] is stored:
                if self.on_default is not None:
                    for name in memo[1].defaulted:  # counted per request, as on the slow path
                        self.on_default(problem, name)
                return memo[1]
        values: dict[str, tuple[float, ...]] = {}
        defaulted: list[str] = []
        for name in names:
            override = overrides.get(name)
            vec = _as_vector(name, override, {}) if override is not None else _as_vector(name, stored.get(name), stored)
            if vec is None:
                vec = USER_FEATURE_DEFAULTS[name]
                defaulted.append(name)
                if self.on_default is not None:
                    self.on_default(problem, name)
            values[name] = vec
        result = UserFeatures(values, tuple(defaulted))
        if not overrides and self.reader is not None and self._caching:
            if len(self._resolved) >= self.max_entries:
                self._resolved.clear()  # rare; entries are rebuilt on the next request per user
            self._resolved[memo_key] = (stored, result)
        return result

    def reachable(self) -> bool:
        return True if self.reader is None else self.reader.ping()
