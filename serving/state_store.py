"""Mutable serving state shared by every worker and replica: Redis, with an in-process cache kept fresh.

Why: `troupe serve --workers N` runs N processes, and production runs several
replicas. State that an admin call or a controller changes at run time —
experiments, the MPC multiplier λ of `allocate`, per-session messages of
`rank`/`slot` — must be the same in all of them. Each process keeps a copy in
memory (the request path reads a dict, never the network) and Redis is the
source of truth.

Spec (ours; no paper covers this):

* **Keys.** `<prefix>:<namespace>:<name>`, values JSON. `prefix` is
  `TROUPE_STATE_STORE_PREFIX` (tests use a unique one, so parallel runs never
  collide). Names are plain names (models.registry.validate_name) except
  session ids, which are hashed into the key.
* **Write.** `set(namespace, name, value)` writes Redis and publishes
  `<namespace>\\0<name>` on the channel `<prefix>:changes` in one MULTI/EXEC,
  then updates this process's cache at once (read-your-writes).
* **Change notification.** A background thread per process subscribes to the
  channel; on a message it re-reads that key and updates the cache, then calls
  the namespace's watchers `(name, value or None)`. Pub/sub, not keyspace
  notifications: those need `notify-keyspace-events` set on the server, which
  managed Redis often refuses. A message lost while the subscriber was
  disconnected is covered by a full reload of every cached namespace on each
  (re)subscription and every `resync_s` seconds.
* **Cached namespaces** (`cache(namespace)`) are loaded whole (SCAN) at start;
  `get`/`items` read the cache. Other namespaces (sessions) are read from Redis
  on each call — there are too many to copy.
* **Atomic updates.** `update(namespace, name, fn)` is optimistic
  (WATCH/MULTI, retried); `lock(name)` is a Redis lock for invariants that span
  keys (at most one running experiment per problem).
* **TTL.** `set(..., ttl_s=…)` expires the key (session state).

Offered API for the algorithm issues (namespaced helpers over the above):
`get_lambda(problem)` / `set_lambda(problem, value)` for the MPC λ of
`allocate` (namespace `mpc_lambda`, cached: read per request), and
`get_session(session_id)` / `set_session(session_id, state, ttl_s)` for
session messages (namespace `session`, not cached, TTL default 30 min).
Experiments use namespace `experiments` (serving/experiments.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from models.logging import log_event

log = logging.getLogger("troupe.serving.state_store")

Watcher = Callable[[str, Any], None]
"""Called as (name, new value or None when deleted), on the store's listener thread."""

LAMBDA_NAMESPACE = "mpc_lambda"
SESSION_NAMESPACE = "session"
DEFAULT_SESSION_TTL_S = 1800.0


class StateStoreError(RuntimeError):
    """The shared store cannot be reached or refused a write; the message says what to check."""


class StateStore:
    """Typed get/set/watch over Redis with a per-process cache kept fresh by pub/sub. Start with `start()`."""

    def __init__(self, url: str, prefix: str = "troupe", resync_s: float = 30.0, client: Any = None) -> None:
        import redis

        if not prefix or ":" in prefix:
            raise ValueError(f"StateStore.prefix: expected a non-empty name without ':', got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.resync_s = resync_s
        self._redis = client if client is not None else redis.Redis.from_url(url, socket_timeout=5.0)
        self._channel = f"{prefix}:changes"
        self._cache: dict[str, dict[str, Any]] = {}
        self._watchers: dict[str, list[Watcher]] = defaultdict(list)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pubsub: Any = None
        self._subscribed = threading.Event()

    # -- keys ------------------------------------------------------------------
    def key(self, namespace: str, name: str) -> str:
        return f"{self.prefix}:{namespace}:{name}"

    # -- life -------------------------------------------------------------------
    def start(self) -> StateStore:
        """Check Redis answers, load the cached namespaces, start the listener (returns once subscribed)."""
        try:
            self._redis.ping()
        except Exception as exc:  # noqa: BLE001 — any client error: one clear message
            raise StateStoreError(
                f"the state store at {self.url} does not answer ({type(exc).__name__}: {exc}); "
                "start Redis (`make services`) or fix TROUPE_STATE_STORE_URL"
            ) from None
        self.reload()
        self._thread = threading.Thread(target=self._listen, name="troupe-state-store", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(10.0):
            raise StateStoreError(f"could not subscribe to {self._channel} on {self.url}")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
        if self._thread is not None:
            self._thread.join(5.0)
        with contextlib.suppress(Exception):
            self._redis.close()

    # -- cache ------------------------------------------------------------------
    def cache(self, namespace: str) -> None:
        """Keep `namespace` in memory (loaded now if the store runs, and on every resync)."""
        with self._lock:
            self._cache.setdefault(namespace, {})
        if self._thread is not None:
            self._load(namespace)

    def reload(self) -> None:
        """Re-read every cached namespace from Redis (after a reconnect; periodically)."""
        for namespace in list(self._cache):
            self._load(namespace)

    def _load(self, namespace: str) -> None:
        pattern = self.key(namespace, "*")
        keys = list(self._redis.scan_iter(match=pattern, count=500))
        values = self._redis.mget(keys) if keys else []
        fresh = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is not None:
                fresh[key.decode().split(":", 2)[2]] = json.loads(raw)
        with self._lock:
            old = self._cache.get(namespace, {})
            self._cache[namespace] = fresh
        for name in set(old) | set(fresh):
            if old.get(name) != fresh.get(name):
                self._notify(namespace, name, fresh.get(name))

    def watch(self, namespace: str, callback: Watcher) -> None:
        """Call `callback(name, value)` whenever a key of `namespace` changes in any process."""
        self._watchers[namespace].append(callback)

    def _notify(self, namespace: str, name: str, value: Any) -> None:
        for callback in list(self._watchers.get(namespace, [])):
            try:
                callback(name, value)
            except Exception as exc:  # noqa: BLE001 — a watcher must not stop the listener
                log_event(log, "state_store.watcher_error", logging.ERROR, namespace=namespace, error=str(exc))

    # -- reads ------------------------------------------------------------------
    def get(self, namespace: str, name: str, default: Any = None) -> Any:
        """From the cache for cached namespaces (no network), else from Redis."""
        cached = self._cache.get(namespace)
        if cached is not None:
            return cached.get(name, default)
        raw = self._redis.get(self.key(namespace, name))
        return default if raw is None else json.loads(raw)

    def items(self, namespace: str) -> dict[str, Any]:
        """Every name → value of a cached namespace."""
        cached = self._cache.get(namespace)
        if cached is None:
            raise StateStoreError(f"namespace {namespace!r} is not cached; call cache({namespace!r}) first")
        return dict(cached)

    # -- writes -----------------------------------------------------------------
    def set(self, namespace: str, name: str, value: Any, ttl_s: float | None = None, only_new: bool = False) -> bool:
        """Write `value` (JSON), publish the change; `only_new`: only when the key does not exist (returns False)."""
        data = json.dumps(value, separators=(",", ":"), sort_keys=True)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self.key(namespace, name), data, px=int(ttl_s * 1000) if ttl_s else None, nx=only_new)
        pipe.publish(self._channel, f"{namespace}\0{name}")
        written, _ = pipe.execute()
        if not written:
            return False
        self._apply(namespace, name, json.loads(data))
        return True

    def delete(self, namespace: str, name: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self.key(namespace, name))
        pipe.publish(self._channel, f"{namespace}\0{name}")
        pipe.execute()
        self._apply(namespace, name, None)

    def update(self, namespace: str, name: str, change: Callable[[Any], Any], retries: int = 200) -> Any:
        """Atomically replace the value with `change(current)` (optimistic: WATCH/MULTI, retried on a race)."""
        import redis

        key = self.key(namespace, name)
        for _ in range(retries):
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    new = change(None if raw is None else json.loads(raw))
                    pipe.multi()
                    pipe.set(key, json.dumps(new, separators=(",", ":"), sort_keys=True))
                    pipe.publish(self._channel, f"{namespace}\0{name}")
                    pipe.execute()
                except redis.WatchError:
                    time.sleep(random.uniform(0.0, 0.002))  # another writer won: back off a little, then retry
                    continue
            self._apply(namespace, name, new)
            return new
        raise StateStoreError(f"{key}: gave up after {retries} concurrent updates")

    @contextlib.contextmanager
    def lock(self, name: str, timeout_s: float = 10.0) -> Iterator[None]:
        """A lock shared by every process (Redis SET NX with expiry), for invariants spanning several keys."""
        with self._redis.lock(f"{self.prefix}:lock:{name}", timeout=timeout_s, blocking_timeout=timeout_s):
            yield

    def _apply(self, namespace: str, name: str, value: Any) -> None:
        with self._lock:
            cached = self._cache.get(namespace)
            if cached is None:
                changed = True
            else:
                changed = cached.get(name) != value
                if value is None:
                    cached.pop(name, None)
                else:
                    cached[name] = value
        if changed:
            self._notify(namespace, name, value)

    # -- listener thread ------------------------------------------------------------
    def _listen(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self._channel)
                self.reload()  # whatever changed while we were not subscribed
                self._subscribed.set()
                backoff = 0.1
                next_resync = time.monotonic() + self.resync_s
                while not self._stop.is_set():
                    message = self._pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        namespace, _, name = message["data"].decode().partition("\0")
                        if namespace in self._cache:
                            raw = self._redis.get(self.key(namespace, name))
                            self._apply(namespace, name, None if raw is None else json.loads(raw))
                    if time.monotonic() >= next_resync:
                        self.reload()
                        next_resync = time.monotonic() + self.resync_s
            except Exception as exc:  # noqa: BLE001 — reconnect: Redis restarted or the network blinked
                if self._stop.is_set():
                    return
                log_event(log, "state_store.reconnect", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        self._pubsub.close()

    # -- namespaced helpers for the algorithm issues ---------------------------------------
    def get_lambda(self, problem: str) -> float | None:
        """The MPC revenue/cost multiplier λ of `problem` (allocate), shared by every worker; None = not set."""
        value = self.get(LAMBDA_NAMESPACE, problem)
        return None if value is None else float(value)

    def set_lambda(self, problem: str, value: float) -> None:
        if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"set_lambda({problem!r}): expected a finite number, got {value!r}")
        self.set(LAMBDA_NAMESPACE, problem, float(value))

    @staticmethod
    def _session_name(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()[:32]  # any id, a safe fixed-length key

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """Session state (messages between rank/slot decisions of one session); None when absent or expired."""
        value = self.get(SESSION_NAMESPACE, self._session_name(session_id))
        return value if isinstance(value, dict) else None

    def set_session(self, session_id: str, state: dict[str, Any], ttl_s: float = DEFAULT_SESSION_TTL_S) -> None:
        """Store session state; it expires `ttl_s` seconds after the last write."""
        if ttl_s <= 0:
            raise ValueError(f"set_session: ttl_s must be > 0, got {ttl_s}")
        # One plain SET, no change message: sessions are never cached or watched, and rank writes one
        # per decision (a MULTI with PUBLISH woke every process's listener for nothing).
        data = json.dumps(state, separators=(",", ":"), sort_keys=True)
        self._redis.set(self.key(SESSION_NAMESPACE, self._session_name(session_id)), data, px=int(ttl_s * 1000))


def open_state_store(settings: Any) -> StateStore | None:
    """The started store of `settings.state_store_url`; None without one (refused when workers > 1)."""
    if settings.state_store_url is None:
        if settings.workers > 1:
            raise StateStoreError(
                f"{settings.workers} workers share experiments and other mutable state only through Redis: "
                "set TROUPE_STATE_STORE_URL (e.g. redis://127.0.0.1:6379/0)"
            )
        return None
    return StateStore(settings.state_store_url, settings.state_store_prefix).start()
