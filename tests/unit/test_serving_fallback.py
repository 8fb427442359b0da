"""Circuit breaker: opens after N failures, lets one trial through after the reset time."""

from __future__ import annotations

import pytest

from serving.fallback import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_s=1.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.t = 1.5
    assert b.allow() and b.state == "half_open"
    assert not b.allow(), "only one trial call while half-open"
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.t = 3.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow() and b.opened_count == 2


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failures=2, reset_s=1.0)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"


@pytest.mark.parametrize(("kwargs", "match"), [({"failures": 0}, "failures"), ({"reset_s": 0}, "reset_s")])
def test_breaker_validates(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
