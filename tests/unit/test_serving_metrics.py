"""serving/metrics.py: tallied counts and latencies expose what one inc()/observe() per request would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.metrics import LATENCY_BUCKETS_S, ServingMetrics

REPO = Path(__file__).resolve().parents[2]
# Exactly on bucket bounds (le is inclusive), between them, past the last one, and zero.
LATENCIES = [0.0, 0.0005, 0.0004, 0.0011, 0.003, 0.02, 0.9999, 1.0, 3.5, 0.0075, 0.0075]


def _samples(text: bytes, prefixes: tuple[str, ...]) -> dict[str, float]:
    """Value by series of these metrics, but for their creation times."""
    lines = [line.rsplit(" ", 1) for line in text.decode().splitlines() if line.startswith(prefixes)]
    return {series: float(value) for series, value in lines if "_created{" not in series}


def test_flushed_tallies_equal_one_observe_per_decision() -> None:
    metrics = ServingMetrics()
    direct = CollectorRegistry()
    requests = Counter("troupe_decisions", "decisions answered", ["problem", "arm", "fallback"], registry=direct)
    latency = Histogram(
        "troupe_decision_latency_seconds", "x", ["problem", "arm"], buckets=LATENCY_BUCKETS_S, registry=direct
    )
    fallbacks = Counter("troupe_fallbacks", "x", ["problem", "reason"], registry=direct)
    for i, seconds in enumerate(LATENCIES):
        fallback = i % 3 == 0
        arm = "treatment" if i % 2 else "none"
        metrics.observe_decision("slot", arm, fallback, seconds)
        requests.labels("slot", arm, "true" if fallback else "false").inc()
        latency.labels("slot", arm).observe(seconds)
        if fallback:
            metrics.count(metrics.fallbacks, "slot", "deadline")
            fallbacks.labels("slot", "deadline").inc()
    wanted = ("troupe_decisions_total", "troupe_decision_latency_seconds_", "troupe_fallbacks_total")
    assert _samples(generate_latest(metrics.registry), wanted) == {}  # nothing written before the flush
    ours = _samples(metrics.render(), wanted)  # a scrape flushes first
    assert ours == pytest.approx(_samples(generate_latest(direct), wanted), rel=1e-12)  # sums: another order
    assert ours  # the comparison compared something
    metrics.observe_decision("slot", "none", False, 0.002)  # tallies start again from zero after a flush
    metrics.flush()
    assert 'troupe_decisions_total{arm="none",fallback="false",problem="slot"} 5.0' in metrics.render().decode()


def test_counts_reach_the_multiprocess_files(tmp_path: Path) -> None:
    # The mode is fixed when prometheus_client is first imported: a fresh interpreter.
    script = textwrap.dedent(
        """
        from serving.metrics import ServingMetrics, multiprocess_dir
        assert multiprocess_dir() is not None
        m = ServingMetrics()
        for _ in range(5):
            m.observe_decision("allocate", "none", False, 0.004)
            m.count_http("/v1/decide/allocate", 200)
        m.count(m.feature_defaults, "allocate", "user_activity_group")
        m.close()  # flushes
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=REPO, timeout=120)
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=str(tmp_path))  # type: ignore[no-untyped-call]
    text = generate_latest(merged).decode()
    assert 'troupe_decisions_total{arm="none",fallback="false",problem="allocate"} 5.0' in text
    assert 'troupe_decision_latency_seconds_bucket{arm="none",le="0.005",problem="allocate"} 5.0' in text
    assert 'troupe_decision_latency_seconds_bucket{arm="none",le="0.003",problem="allocate"} 0.0' in text
    assert 'troupe_http_requests_total{route="/v1/decide/allocate",status="200"} 5.0' in text
    assert 'troupe_feature_defaults_total{feature="user_activity_group",problem="allocate"} 1.0' in text
