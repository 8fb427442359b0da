"""Prometheus metrics of one app instance, in their own CollectorRegistry (no module-level singletons).

Several workers (`troupe serve --workers N`): with `PROMETHEUS_MULTIPROC_DIR`
set (the serve command sets and empties `<TROUPE_HOME>/prometheus` when N > 1)
prometheus_client keeps every value in per-process files and `/metrics`, on
whichever worker answers, renders all workers together (MultiProcessCollector):
counters and histograms summed, the spool size summed over live workers, a
breaker counted open if open in any worker, a model loaded only if loaded in
every worker. Without it, /metrics is this process's own.

Live values (spool size, breaker states, producer counts) are read from their
owners by a callback and written into real metrics on every scrape and every
second (so other workers' scrapes see them too); producer counts are counters
(`troupe_producer_events_total`), increased by what changed since the last read.

Per-request counts and latencies are tallied in plain dicts and written into
the metrics at the same moments (`flush`: every second and before every
scrape), one write per series instead of one per request. Why: in
multiprocess mode every `inc`/`observe` is a locked write into an mmap'ed
file (~0.7 µs a counter, ~1.6 µs a histogram, measured), four of them per
decision. A scrape of this worker is exact; another worker's scrape sees this
one's counts up to a second late, as it sees the live values.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
LiveRead = Callable[[], dict[str, dict[tuple[str, ...], float]]]


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess files, when this process's metrics are file-backed.

    Decided by prometheus_client when it was first imported (PROMETHEUS_MULTIPROC_DIR
    set then), not by the variable now: Feast sets that variable to a temp folder of
    its own when it is imported later, which must not switch us to reading its folder.
    """
    from prometheus_client import values

    if getattr(values.ValueClass, "__name__", "") != "MmapedValue":
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("PROMETHEUS_MULTIPROCESS_DIR") or None


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        # Label children by (metric, label values): `labels()` costs more than the `inc` itself.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # Tallied since the last flush (see the module docstring): counts by (counter, label values), and
        # by (problem, arm, fallback) a decision tally [count, latency sum, count per latency bucket...].
        self._counts: dict[tuple[Any, tuple[str, ...]], int] = {}
        self._decisions: dict[tuple[str, str, bool], list[float]] = {}
        self._bounds = [*LATENCY_BUCKETS_S, float("inf")]
        r = self.registry
        self.requests = Counter("troupe_decisions", "decisions answered", ["problem", "arm", "fallback"], registry=r)
        self.latency = Histogram(
            "troupe_decision_latency_seconds",
            "server-side decision latency",
            ["problem", "arm"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.fallbacks = Counter(
            "troupe_fallbacks", "decisions answered by the default policy", ["problem", "reason"], registry=r
        )
        self.feature_defaults = Counter(
            "troupe_feature_defaults",
            "online features replaced by their documented default",
            ["problem", "feature"],
            registry=r,
        )
        self.feature_read_errors = Counter(
            "troupe_feature_read_errors",
            "online-store reads that failed (stale entry or defaults served)",
            ["feature_service"],
            registry=r,
        )
        self.feedback = Counter("troupe_feedback", "feedback events accepted", registry=r)
        self.model_swaps = Counter("troupe_model_swaps", "policy versions switched in", ["problem"], registry=r)
        self.hook_errors = Counter("troupe_hook_errors", "experiment hook calls that raised", ["hook"], registry=r)
        self.log_errors = Counter("troupe_decision_log_errors", "events the producer refused", ["topic"], registry=r)
        self.http_requests = Counter(
            "troupe_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        # Live values, written from the callbacks (see the module docstring for the aggregation).
        self._live: dict[str, Any] = {
            "troupe_spool_size": Gauge(
                "troupe_spool_size",
                "events in the write-ahead spool not yet acknowledged by Kafka",
                registry=r,
                multiprocess_mode="livesum",
            ),
            "troupe_breaker_open": Gauge(
                "troupe_breaker_open",
                "1 while the problem's inference circuit breaker is open",
                ["problem"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            "troupe_model_loaded": Gauge(
                "troupe_model_loaded",
                "1 when the problem has a loaded policy",
                ["problem"],
                registry=r,
                multiprocess_mode="livemin",
            ),
            "troupe_allocate_lambda": Gauge(
                "troupe_allocate_lambda",
                "allocate's revenue/cost multiplier λ in use (shared by every worker through the state store)",
                registry=r,
                multiprocess_mode="livemax",
            ),
            "troupe_allocate_utilisation": Gauge(
                "troupe_allocate_utilisation",
                "last reported compute utilisation (used / budget) the allocate balancer stepped on",
                registry=r,
                multiprocess_mode="livemax",
            ),
            "troupe_producer_events": Counter(
                "troupe_producer_events",
                "decision-log events by outcome (sent, spooled, replayed, dropped, corrupt)",
                ["outcome"],
                registry=r,
            ),
        }
        self._multiprocess_dir = multiprocess_dir()
        self._reads: list[LiveRead] = []
        self._last_counts: dict[tuple[str, tuple[str, ...]], float] = {}
        self._refresh_task: asyncio.Task[None] | None = None

    def observe_decision(self, problem: str, arm: str, fallback: bool, seconds: float) -> None:
        """Count one decision and its latency (written to the metrics at the next `flush`)."""
        tally = self._decisions.get((problem, arm, fallback))
        if tally is None:
            tally = self._decisions[(problem, arm, fallback)] = [0.0] * (2 + len(self._bounds))
        tally[0] += 1
        tally[1] += seconds
        # The histogram's bucket rule: the first upper bound >= the value.
        tally[2 + bisect.bisect_left(self._bounds, seconds)] += 1

    def count(self, counter: Counter, *labels: str) -> None:
        """Add one to `counter{labels}` (written at the next `flush`)."""
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0) + 1

    def count_http(self, route: str, status: int) -> None:
        self.count(self.http_requests, route, str(status))

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels) if labels else metric
        return child

    def flush(self) -> None:
        """Write the tallies into the metrics. Called on the event loop's thread, like the counting."""
        counts, self._counts = self._counts, {}
        for (counter, labels), n in counts.items():
            self._child(counter, labels).inc(n)
        decisions, self._decisions = self._decisions, {}
        for (problem, arm, fallback), tally in decisions.items():
            self._child(self.requests, (problem, arm, "true" if fallback else "false")).inc(tally[0])
            histogram = self._child(self.latency, (problem, arm))
            # prometheus_client's Histogram has no observe-many: its child's sum and bucket values
            # take the tally directly (tests/unit/test_serving_metrics.py checks the exposition
            # equals one observe() per decision).
            histogram._sum.inc(tally[1])  # noqa: SLF001
            for bucket, hits in zip(histogram._buckets, tally[2:], strict=True):  # noqa: SLF001
                if hits:
                    bucket.inc(hits)

    def add_callback(self, read: LiveRead, labels: dict[str, list[str]] | None = None) -> None:
        """Read live values with `read` on every scrape and every second (`labels` kept for compatibility)."""
        self._reads.append(read)
        with contextlib.suppress(RuntimeError):  # no running loop: refreshed on scrapes only
            if self._refresh_task is None:
                self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.refresh()

    def refresh(self) -> None:
        self.flush()
        for read in self._reads:
            try:
                values = read()
            except Exception:  # noqa: BLE001 — a failing read must not break /metrics
                continue
            for name, series in values.items():
                metric = self._live.get(name)
                if metric is None:
                    continue
                for labels, value in series.items():
                    target = metric.labels(*labels) if labels else metric
                    if isinstance(metric, Counter):
                        last = self._last_counts.get((name, labels), 0.0)
                        if value > last:
                            target.inc(value - last)
                        self._last_counts[(name, labels)] = value
                    else:
                        target.set(value)

    def close(self) -> None:
        self.flush()
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None

    def render(self) -> bytes:
        self.refresh()
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class RequestCounter:
    """Pure-ASGI middleware counting every HTTP answer in `troupe_http_requests_total{route, status}`.

    The route label is the route's path template (`/v1/models/{problem}`) — never
    the raw path, so fuzzed URLs cannot create unbounded series; decide requests
    (answered before routing) keep their fixed path; anything else is `unmatched`.
    """

    def __init__(self, app: ASGIApp, fixed_paths: frozenset[str]) -> None:
        self.app = app
        self.fixed_paths = fixed_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            state = getattr(scope["app"].state, "troupe", None) if "app" in scope else None
            if state is not None:
                route = scope.get("route")
                path = scope["path"]
                label = getattr(route, "path", None) or (path if path in self.fixed_paths else "unmatched")
                state.service.metrics.count_http(label, status)
