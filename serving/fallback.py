"""Circuit breaker in front of inference.

After `failures` consecutive errors or timeouts the breaker opens: requests go
straight to the default policy without touching the backend. After
`reset_s` one trial call is let through (half-open); its success closes the
breaker, its failure opens it again. The API runs on one event loop per
worker, so no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker; `clock` is injectable for tests."""

    failures: int = 5
    reset_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    _consecutive: int = 0
    _opened_at: float = 0.0
    _trial_in_flight: bool = False
    opened_count: int = field(default=0)

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"CircuitBreaker.failures must be >= 1, got {self.failures}")
        if self.reset_s <= 0:
            raise ValueError(f"CircuitBreaker.reset_s must be > 0, got {self.reset_s}")

    def allow(self) -> bool:
        """Whether the next call may reach the backend."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self._opened_at >= self.reset_s:
            self.state = "half_open"
            self._trial_in_flight = False
        if self.state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._trial_in_flight = False
        self.state = "closed"

    def record_failure(self) -> None:
        self._consecutive += 1
        self._trial_in_flight = False
        if self.state == "half_open" or self._consecutive >= self.failures:
            if self.state != "open":
                self.opened_count += 1
            self.state = "open"
            self._opened_at = self.clock()
