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
* A zero message (a session's start, as in training) when: the request has no session id, there is no
  store, nothing is stored, the stored message belongs to another policy version or has the wrong
  size, or the store cannot be read (logged as `rank_message.read_error`; the decision is still served).
* Only a decision the policy made writes a message: a fallback (default weights) leaves the stored
  message as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.logging import log_event
from serving.state_store import DEFAULT_SESSION_TTL_S, SESSION_NAMESPACE

log = logging.getLogger("troupe.serving.rank_messages")

FloatArray = npt.NDArray[np.float32]
MESSAGE_KEY = "rank_message"


@dataclass
class SessionMessages:
    """Load and store the rank message of a session (module docstring).

    The request path talks to Redis through an asyncio client (made on first use, in the serving loop):
    a blocking call would hold the event loop for a network round trip per read and per write. The keys
    and the JSON are `StateStore.get_session` / `set_session`'s, so either side reads what the other wrote.
    """

    store: Any | None
    """A started `serving.state_store.StateStore`, or None (every request starts from a zero message)."""
    ttl_s: float = DEFAULT_SESSION_TTL_S
    _client: Any = None

    def _key(self, session_id: str) -> str:
        assert self.store is not None
        return str(self.store.key(SESSION_NAMESPACE, self.store._session_name(session_id)))

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio

            assert self.store is not None
            self._client = redis.asyncio.Redis.from_url(self.store.url, socket_timeout=5.0)
        return self._client

    async def load(self, session_id: str | None, version: str, size: int) -> tuple[FloatArray, bool]:
        """(message (1, size), whether it came from the store) — zeros when there is none to carry."""
        zero = np.zeros((1, size), np.float32)
        if session_id is None or self.store is None:
            return zero, False
        try:
            raw = await self._redis().get(self._key(session_id))
            state = json.loads(raw) if raw is not None else None
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

    async def save(self, session_id: str | None, version: str, message: FloatArray) -> None:
        if session_id is None or self.store is None:
            return
        state = {MESSAGE_KEY: np.asarray(message, np.float32).reshape(-1).tolist(), "version": version}
        data = json.dumps(state, separators=(",", ":"), sort_keys=True)
        try:
            await self._redis().set(self._key(session_id), data, px=int(self.ttl_s * 1000))
        except Exception as exc:  # noqa: BLE001 — the decision stands; the next request starts from zero
            log_event(log, "rank_message.write_error", logging.WARNING, error=str(exc))

    async def close(self) -> None:
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
