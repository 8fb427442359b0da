"""λ of `allocate` in serving: read on every request, stepped once per interval, shared by every worker.

Spec (ours; the paper runs its balancer beside the serving cluster without saying how):
* λ lives in the state store (serving/state_store.py `get_lambda`/`set_lambda`,
  namespace `mpc_lambda`, cached in each process: the request path reads a dict).
  Without a store (one worker) it lives in this process.
* Once per interval the metrics pipeline reports last interval's measured
  utilisation (compute used / budget), relative traffic and slot of the day
  (POST /v1/allocate/balancer/observe). The balancer (serving/balancer.py:
  `MPCBalancer` with the current MaRCA version's load model, its PI fallback
  when the model is missing or not trusted) steps on the *shared* state — the
  traffic forecast (diurnal profile, level, the last deviation it carries
  forward, the sums its persistence φ̂ is fitted from), the PI integral, the
  MPC observer's bias and one-step prediction, the last reading — read and
  written in one optimistic Redis transaction (`StateStore.update`), so whichever worker
  gets the report continues from the same state and two concurrent reports
  cannot lose a step. Then λ is published with `set_lambda`.
* An admin may set λ by hand (PUT /v1/allocate/lambda); the PI fallback then
  continues from it (bumpless), and the next report steps from it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from serving.balancer import (
    SERVED_ANCHOR_GAIN,
    SERVED_BIAS_GAIN,
    SERVED_SET_POINT,
    BalancerError,
    CurveLoadModel,
    DiurnalTrafficForecast,
    FeedbackBalancer,
    LoadModel,
    MPCBalancer,
)
from serving.state_store import LAMBDA_NAMESPACE, StateStore

PROBLEM = "allocate"
STATE_NAMESPACE = "allocate_balancer"
DEFAULT_LAMBDA = 1.0
"""λ before any report or admin call (the training-time feedback controller's start, marca.FeedbackLambda)."""


@dataclass(frozen=True)
class BalancerSettings:
    target_utilisation: float = SERVED_SET_POINT
    """C_m of the MPC and its PI fallback (serving/balancer.SERVED_SET_POINT: above the issue's 0.95 goal on purpose)."""
    slots_per_day: int = 96
    horizon: int = 10
    lambda_max: float = 20.0
    anchor_gain: float = SERVED_ANCHOR_GAIN
    """`MPCBalancer.anchor_gain` (serving/balancer.py: where the plan starts; 1 = the paper's plain MPC)."""
    bias_gain: float = SERVED_BIAS_GAIN
    """`MPCBalancer.bias_gain` (offset-free integral action; 0 = the paper's plain MPC)."""


def step_state(
    state: dict[str, Any] | None,
    current_lambda: float,
    utilisation: float,
    traffic: float,
    slot: int,
    load_model: LoadModel | CurveLoadModel | None,
    cfg: BalancerSettings,
) -> dict[str, Any]:
    """One balancer interval on the JSON state: returns the new state (its `lambda` is the λ to apply)."""
    state = dict(state or {})
    forecast = DiurnalTrafficForecast(cfg.slots_per_day)
    if "profile" in state:  # a state from before the forecast's carry (no deviation, φ̂ sums) loads too
        forecast.load_state(state)
    forecast.observe(slot, traffic)
    feedback = FeedbackBalancer(target_utilisation=cfg.target_utilisation, lambda_max=cfg.lambda_max)
    feedback.integral = float(state.get("integral", 0.0))
    feedback._base = state.get("base")  # noqa: SLF001 — the PI's own state, persisted between processes
    mpc = MPCBalancer(
        target_utilisation=cfg.target_utilisation,
        horizon=cfg.horizon,
        lambda_max=cfg.lambda_max,
        fallback=feedback,
        model=load_model,
        anchor_gain=cfg.anchor_gain,
        bias_gain=cfg.bias_gain,
    )
    # The observer's state, carried between intervals (and processes) like the PI's.
    mpc.bias = float(state.get("bias", 0.0))
    mpc.last_prediction = state.get("prediction")
    next_slot = (slot + 1) % cfg.slots_per_day
    lam = mpc.update(utilisation, forecast.forecast(next_slot, cfg.horizon), current_lambda, next_slot)
    return {
        **forecast.state(),
        "integral": feedback.integral,
        "base": feedback._base,  # noqa: SLF001
        "bias": mpc.bias,
        "prediction": mpc.last_prediction,
        "lambda": lam,
        "utilisation": float(utilisation),
        "traffic": float(traffic),
        "slot": int(slot),
        "controller": "mpc" if mpc.last_reason == "mpc" else "feedback",
        "steps": int(state.get("steps", 0)) + 1,
    }


class AllocateLambda:
    """λ for the request path (`current`), the interval step (`observe`) and the admin override (`set`)."""

    def __init__(self, store: StateStore | None, cfg: BalancerSettings | None = None) -> None:
        self.store, self.cfg = store, cfg or BalancerSettings()
        self._local_lambda = DEFAULT_LAMBDA
        self._local_state: dict[str, Any] | None = None
        self._lock = threading.Lock()
        if store is not None:
            store.cache(LAMBDA_NAMESPACE)
            store.cache(STATE_NAMESPACE)

    def current(self) -> float:
        """The λ decisions use now: a cached dict read, no network."""
        if self.store is None:
            return self._local_lambda
        lam = self.store.get_lambda(PROBLEM)
        return DEFAULT_LAMBDA if lam is None else lam

    def state(self) -> dict[str, Any]:
        if self.store is None:
            return dict(self._local_state or {})
        value = self.store.get(STATE_NAMESPACE, PROBLEM)
        return dict(value) if isinstance(value, dict) else {}

    def status(self) -> dict[str, Any]:
        s = self.state()
        return {
            "problem": PROBLEM,
            "value": self.current(),
            "controller": s.get("controller", "none"),
            "utilisation": s.get("utilisation"),
            "target_utilisation": self.cfg.target_utilisation,
            "steps": int(s.get("steps", 0)),
            "shared": self.store is not None,
        }

    def set(self, value: float) -> dict[str, Any]:
        """Admin override; the PI fallback continues from it (no integral carried over). Blocking (Redis)."""
        if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= self.cfg.lambda_max):
            raise BalancerError(f"lambda: expected a number in [0, {self.cfg.lambda_max}], got {value!r}")

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            # No prediction was made for a hand-set λ: the observer starts again from the next reading.
            fresh = {"base": float(value), "integral": 0.0, "prediction": None}
            return {**(old or {}), **fresh, "lambda": float(value), "controller": "admin"}

        if self.store is None:
            with self._lock:
                self._local_state = change(self._local_state)
                self._local_lambda = float(value)
        else:
            self.store.update(STATE_NAMESPACE, PROBLEM, change)
            self.store.set_lambda(PROBLEM, float(value))
        return self.status()

    def observe(
        self, utilisation: float, traffic: float, slot: int, load_model: LoadModel | CurveLoadModel | None
    ) -> dict[str, Any]:
        """Step the balancer with last interval's reading; publishes and returns the new λ. Blocking (Redis)."""
        if self.store is None:
            with self._lock:
                self._local_state = step_state(
                    self._local_state, self._local_lambda, utilisation, traffic, slot, load_model, self.cfg
                )
                self._local_lambda = float(self._local_state["lambda"])
        else:
            store = self.store
            new = store.update(
                STATE_NAMESPACE,
                PROBLEM,
                lambda old: step_state(old, self.current(), utilisation, traffic, slot, load_model, self.cfg),
            )
            store.set_lambda(PROBLEM, float(new["lambda"]))
        return self.status()
