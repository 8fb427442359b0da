"""Prometheus metrics of one app instance, in their own CollectorRegistry (no module-level singletons)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class _CallbackCollector(Collector):
    """Gauges read at scrape time (producer counters, spool size, breaker state)."""

    def __init__(
        self, read: Callable[[], dict[str, dict[tuple[str, ...], float]]], labels: dict[str, list[str]]
    ) -> None:
        self._read = read
        self._labels = labels

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._read()
        for name, series in values.items():
            fam = GaugeMetricFamily(name, name.replace("_", " "), labels=self._labels.get(name, []))
            for labels, value in series.items():
                fam.add_metric(list(labels), value)
            yield fam


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self._children: dict[tuple[str, str, bool], tuple[Any, Any]] = {}
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

    def observe_decision(self, problem: str, arm: str, fallback: bool, seconds: float) -> None:
        """Count one decision and its latency; label children are cached (labels() is costly per call)."""
        key = (problem, arm, fallback)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(problem, arm, "true" if fallback else "false"),
                self.latency.labels(problem, arm),
            )
        children[0].inc()
        children[1].observe(seconds)

    def add_callback(
        self, read: Callable[[], dict[str, dict[tuple[str, ...], float]]], labels: dict[str, list[str]]
    ) -> None:
        self.registry.register(_CallbackCollector(read, labels))

    def render(self) -> bytes:
        return generate_latest(self.registry)
