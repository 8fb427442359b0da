"""MA-RDPG's message between rank's stage models, kept per session in the shared StateStore.

A rank policy whose stage models take a "message" input (training/algorithms/ma_rdpg.py: inputs
"observation", "message" → outputs "action_mean", "action_log_std", "next_message") is served as
the stages run now — pre-rank, rank, re-rank in turn — with the message handed from each stage's
"next_message" to the next stage's "message" within the request, and re-rank's "next_message"
stored as the session's message for its next request.

Spec (ours):
* Storage: `StateStore.get_session` / `set_session` (Redis, namespace `session`, key = a hash of the
  session id), value {"rank_message": [floats], "version": policy version}. Bounded: one fixed-size
  vector per session (the model's state size, checked on read); expiring: `ttl_s` after the last write
  (the store's session TTL, 30 min), which also ends a session that went quiet.
  Shared by every worker and replica through Redis.
* One round trip per request (write-behind). A decision's message is not written before the answer
  goes out: it waits in this worker's pending writes and rides along with the next request's read (one
  pipeline: the pending SETs, then the GET), or is sent on its own `flush_after_s` (10 ms) after it
  was queued, whichever comes first. Measured (benchmarks/serving_profile.py --rank-policy ma_rdpg):
  a GET and a SET per request cost 175–260 µs of server CPU on the 2-core host, most of it redis-py's
  per-command overhead, not the network. What this gives up, and why it is acceptable:
  - this worker reads its own pending write (read-your-writes within a worker);
  - another worker or replica sees the message up to `flush_after_s` late: a session's next request
    follows the user's next scroll (hundreds of ms at least), and a request that does come earlier
    starts from the message before — the same soft state the zero-message fallback already accepts
    (and the late write then lands after that request's own, so the session's next one reads the older
    message again);
  - a worker killed with writes pending loses at most `flush_after_s` of messages (those sessions'
    next requests start from their previous message or zero); a clean shutdown flushes them (`close`).
  The decision itself is never held back or lost by this: only the carried message is.
* A zero message (a session's start, as in training) when: the request has no session id, there is no
  store, nothing is stored, the stored message belongs to another policy version or has the wrong
  size, or the store cannot be read (logged as `rank_message.read_error`; the decision is still served).
* Only a decision the policy made writes a message: a fallback (default weights) leaves the stored
  message as it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from models.logging import log_event
from serving.state_store import DEFAULT_SESSION_TTL_S, SESSION_NAMESPACE

log = logging.getLogger("troupe.serving.rank_messages")

FloatArray = npt.NDArray[np.float32]
MESSAGE_KEY = "rank_message"
DEFAULT_FLUSH_AFTER_S = 0.010


@dataclass
class SessionMessages:
    """Load and store the rank message of a session (module docstring).

    The request path talks to Redis through an asyncio client (made on first use, in the serving loop):
    a blocking call would hold the event loop for a network round trip per read and per write. The keys
    and the JSON are `StateStore.get_session` / `set_session`'s, so either side reads what the other wrote
    (msgspec writes the same JSON as `json.dumps`, at a fraction of the cost).
    """

    store: Any | None
    """A started `serving.state_store.StateStore`, or None (every request starts from a zero message)."""
    ttl_s: float = DEFAULT_SESSION_TTL_S
    flush_after_s: float = DEFAULT_FLUSH_AFTER_S
    """Longest a written message waits for the next read to carry it (module docstring)."""
    _client: Any = None
    _pending: dict[str, bytes] = field(default_factory=dict)
    """key → the latest message of that session this worker decided and has not sent yet."""
    _flush_timer: asyncio.TimerHandle | None = None
    _flush_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.flush_after_s > 0:
            raise ValueError(f"SessionMessages.flush_after_s: must be > 0, got {self.flush_after_s}")

    def _key(self, session_id: str) -> str:
        assert self.store is not None
        return str(self.store.key(SESSION_NAMESPACE, self.store._session_name(session_id)))

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio

            assert self.store is not None
            self._client = redis.asyncio.Redis.from_url(self.store.url, socket_timeout=5.0)
        return self._client

    def _take_pending(self) -> dict[str, bytes]:
        pending, self._pending = self._pending, {}
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        return pending

    def _pipeline_of_sets(self, pending: dict[str, bytes]) -> Any:
        """A pipeline (no transaction) holding one SET with the session TTL per pending write."""
        pipe = self._redis().pipeline(transaction=False)
        ttl_ms = int(self.ttl_s * 1000)
        for key, data in pending.items():
            pipe.set(key, data, px=ttl_ms)
        return pipe

    async def _fetch(self, key: str) -> bytes | None:
        """GET `key`, sending this worker's pending writes (SETs, before the GET) in the same round trip."""
        pending = self._take_pending()
        if not pending:
            raw: bytes | None = await self._redis().get(key)
            return raw
        pipe = self._pipeline_of_sets(pending)
        pipe.get(key)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 — the writes are lost (module docstring); report both
            log_event(log, "rank_message.write_error", logging.WARNING, error=str(exc), messages=len(pending))
            raise
        failed = [r for r in results[:-1] if isinstance(r, Exception)]
        if failed:
            log_event(log, "rank_message.write_error", logging.WARNING, error=str(failed[0]), messages=len(failed))
        if isinstance(results[-1], Exception):
            raise results[-1]
        fetched: bytes | None = results[-1]
        return fetched

    async def load(self, session_id: str | None, version: str, size: int) -> tuple[FloatArray, bool]:
        """(message (1, size), whether it came from the store) — zeros when there is none to carry."""
        zero = np.zeros((1, size), np.float32)
        if session_id is None or self.store is None:
            return zero, False
        try:
            # The pending writes go first in the same pipeline: a write of this session's own comes back.
            raw = await self._fetch(self._key(session_id))
            state = msgspec.json.decode(raw) if raw is not None else None
        except Exception as exc:  # noqa: BLE001 — Redis down or a bad value: serve from a zero message, say so
            log_event(log, "rank_message.read_error", logging.WARNING, error=str(exc))
            return zero, False
        if not isinstance(state, dict) or state.get("version") != version:
            return zero, False
        values = state.get(MESSAGE_KEY)
        if not isinstance(values, list) or len(values) != size:
            return zero, False
        try:
            message = np.asarray(values, np.float32).reshape(1, size)
        except (TypeError, ValueError):
            return zero, False
        return (message, True) if np.isfinite(message).all() else (zero, False)

    def save(self, session_id: str | None, version: str, message: FloatArray) -> None:
        """Queue the session's message (write-behind: module docstring); never blocks the answer."""
        if session_id is None or self.store is None:
            return
        state = {MESSAGE_KEY: np.asarray(message, np.float32).reshape(-1).tolist(), "version": version}
        self._pending[self._key(session_id)] = msgspec.json.encode(state, order="sorted")
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.flush_after_s, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flush_tasks.add(task)  # a reference until it ends (the loop keeps only weak ones)
        task.add_done_callback(self._flush_tasks.discard)

    async def flush(self) -> None:
        """Send every pending write now (the timer, and `close`)."""
        pending = self._take_pending()
        if not pending:
            return
        try:
            await self._pipeline_of_sets(pending).execute()
        except Exception as exc:  # noqa: BLE001 — the decisions stand; those sessions start from an older message
            log_event(log, "rank_message.write_error", logging.WARNING, error=str(exc), messages=len(pending))

    async def close(self) -> None:
        """Flush what is pending (a clean shutdown loses no message), then close the client."""
        if self.store is not None:
            await self.flush()
            if self._flush_tasks:
                await asyncio.gather(*self._flush_tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def chained_scorer(
    score: Callable[[str | None, FloatArray, FloatArray], Awaitable[dict[str, FloatArray]]], message: FloatArray
) -> tuple[Callable[[str | None, FloatArray], Awaitable[dict[str, FloatArray]]], list[FloatArray]]:
    """A two-argument scorer (what `serving.policies.decide_rank` calls once per stage) that feeds each
    stage the message the previous stage sent. Returns it and a one-element list holding the latest
    message (after re-rank: the session's message for its next request)."""
    latest = [message]

    async def scorer(agent: str | None, observation: FloatArray) -> dict[str, FloatArray]:
        out = await score(agent, observation, latest[0])
        latest[0] = out["next_message"]
        return out

    return scorer, latest
