"""serving/features.py OnlineFeatures: TTL cache, stale-while-revalidate, one read per user, read errors."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from serving.features import USER_FEATURE_DEFAULTS, OnlineFeatures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingReader:
    """Answers `group` as the user's activity group; counts reads; can block or fail on demand."""

    def __init__(self) -> None:
        self.group = 0
        self.reads = 0
        self.fail = False
        self.gate: threading.Event | None = None

    def read(self, feature_service: str, user_id: str) -> dict[str, Any]:
        if self.gate is not None:
            assert self.gate.wait(5), "test gate never opened"
        self.reads += 1
        if self.fail:
            raise ConnectionError("online store unreachable")
        return {"user_activity_group": self.group}

    def ping(self) -> bool:
        return not self.fail


def _features(**kw: Any) -> tuple[CountingReader, Clock, OnlineFeatures]:
    """A counting reader, a manual clock and the cache over them: TTL 30 s, max stale 300 s, no jitter unless given."""
    reader, clock = CountingReader(), Clock()
    settings: dict[str, Any] = {"ttl_s": 30.0, "max_stale_s": 300.0, "ttl_jitter": 0.0, **kw}
    return reader, clock, OnlineFeatures(reader, clock=clock, **settings)


def _sync(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """An async test body run on a fresh event loop (the project has no pytest-asyncio)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def _settle() -> None:
    """Let background reads (worker thread + callbacks) finish."""
    for _ in range(100):
        await asyncio.sleep(0.005)


@_sync
async def test_fresh_entries_are_reused_and_stale_ones_refresh_in_the_background() -> None:
    reader, clock, features = _features()
    assert (await features.get("allocate", "u1")).activity_group == 0
    clock.now += 29.0
    await features.get("allocate", "u1")
    assert reader.reads == 1  # fresh: no second read

    reader.group = 2
    clock.now += 2.0  # past the TTL, within max_stale_s
    stale = await features.get("allocate", "u1")
    assert stale.activity_group == 0  # answered at once with the stale entry ...
    await _settle()
    assert reader.reads == 2  # ... while one background read refreshed it
    assert (await features.get("allocate", "u1")).activity_group == 2
    assert reader.reads == 2


@_sync
async def test_an_entry_past_max_stale_waits_for_a_fresh_read() -> None:
    reader, clock, features = _features()
    await features.get("allocate", "u1")
    reader.group = 2
    clock.now += 30.0 + 300.0 + 1.0
    assert (await features.get("allocate", "u1")).activity_group == 2
    assert reader.reads == 2


@_sync
async def test_concurrent_misses_for_one_user_share_one_read() -> None:
    reader, clock, features = _features()
    reader.gate = threading.Event()
    pending = [asyncio.ensure_future(features.get("slot", "u1")) for _ in range(20)]
    await asyncio.sleep(0.02)
    reader.gate.set()
    results = await asyncio.gather(*pending)
    assert reader.reads == 1
    assert {r.activity_group for r in results} == {0}


@_sync
async def test_a_failed_read_serves_the_stale_entry_or_the_defaults_and_is_counted() -> None:
    errors: list[str] = []
    defaults: list[tuple[str, str]] = []
    reader, clock, features = _features(on_read_error=errors.append, on_default=lambda p, f: defaults.append((p, f)))
    reader.group = 2
    await features.get("allocate", "known")  # fresh until t + 30
    reader.fail = True

    # Unknown user, store down: the documented defaults, counted as defaults and as a read error.
    cold = await features.get("allocate", "new-user")
    assert cold.values["user_activity_group"] == USER_FEATURE_DEFAULTS["user_activity_group"]
    assert defaults == [("allocate", "user_activity_group")]
    assert errors == ["allocate_v1"]

    # Known user within max_stale_s: served stale at once; the failed background refresh is counted, not raised.
    clock.now += 31.0
    assert (await features.get("allocate", "known")).activity_group == 2
    await _settle()
    assert len(errors) == 2
    # The next requests inside read_retry_s do not try the store again (no read, no log line per request).
    reads = reader.reads
    for _ in range(10):
        assert (await features.get("allocate", "known")).activity_group == 2
    await _settle()
    assert reader.reads == reads and len(errors) == 2

    # Far past max_stale_s, store still down: the last value read beats the defaults.
    clock.now += 10_000.0
    assert (await features.get("allocate", "known")).activity_group == 2
    assert len(errors) == 3

    # The store is back: the next read after the retry interval refreshes.
    reader.fail = False
    reader.group = 1
    clock.now += 6.0
    await features.get("allocate", "known")
    await _settle()
    assert (await features.get("allocate", "known")).activity_group == 1


@_sync
async def test_ttl_jitter_spreads_expiries_within_the_stated_fraction() -> None:
    reader, clock, features = _features(ttl_jitter=0.2)
    for i in range(200):
        await features.get("allocate", f"u{i}")
    lifetimes = [fresh_until - clock.now for fresh_until, _ in features._cache.values()]
    assert min(lifetimes) >= 24.0 and max(lifetimes) <= 30.0
    assert max(lifetimes) - min(lifetimes) > 4.0  # actually spread, not one shared expiry


@pytest.mark.parametrize("bad", [{"ttl_s": -1.0}, {"max_stale_s": -1.0}, {"read_retry_s": -1.0}, {"ttl_jitter": 1.0}])
def test_bad_cache_settings_are_refused_naming_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        OnlineFeatures(None, **bad)  # type: ignore[arg-type]


class StoredReader:
    """Answers a fixed stored dict for every user."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored = stored

    def read(self, feature_service: str, user_id: str) -> dict[str, Any]:
        return dict(self.stored)

    def ping(self) -> bool:
        return True


@_sync
async def test_slot_reads_the_live_sequence_and_defaults_a_malformed_one_to_padding() -> None:
    sequence = [90.0, 1.7e9, 0.0, 1.69e9] + [0.0] * 6
    counted: list[tuple[str, str]] = []
    got = await OnlineFeatures(StoredReader({"user_live_sequence": sequence}), ttl_s=0.0).get("slot", "u1")
    assert got.values["user_live_sequence"] == tuple(sequence)
    assert "user_live_sequence" not in got.defaulted
    for bad in (sequence[:-2], [*sequence[:-1], float("nan")], None):
        features = OnlineFeatures(
            StoredReader({"user_live_sequence": bad}), ttl_s=0.0, on_default=lambda p, f: counted.append((p, f))
        )
        got = await features.get("slot", "u1")
        assert got.values["user_live_sequence"] == USER_FEATURE_DEFAULTS["user_live_sequence"] == (0.0,) * 10
        assert "user_live_sequence" in got.defaulted
    assert counted.count(("slot", "user_live_sequence")) == 3
    # Other problems do not read it.
    assert "user_live_sequence" not in (await OnlineFeatures(StoredReader({}), ttl_s=0.0).get("rank", "u1")).values
