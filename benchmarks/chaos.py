"""The chaos suite at full size (issue #19): counts of lost decisions, lake duplicates and 5xx under faults.

    python -m benchmarks.chaos [--quick]

Runs tests/chaos/scenarios.py on real processes (Tansu, `troupe serve` with
one or two workers, ingestion processes, Redis): two workers under a 25 s
broker freeze at 100 req/s, kill -9 of the API at 5, 12 and 20 s into an
outage, 29 concurrent-ingest trials with malformed and deeply nested
messages, traversal names and corrupt models through the CLI and the API,
and schemathesis `--checks all`. Writes benchmarks/results/chaos.json with
`chaos.lost_decisions`, `chaos.lake_duplicates`, `chaos.fuzz_5xx` (goal 0
each), `chaos.requests_fuzzed` and `chaos.outages_survived`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Metric, write_result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the bounded sizes of `make test`")
    args = ap.parse_args(argv)
    from tests.chaos import scenarios

    full = not args.quick
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="troupe-chaos-") as tmp:
        work = Path(tmp)
        print("two workers × broker freeze ...", flush=True)
        freeze = scenarios.two_workers_broker_freeze(work, freeze_s=25.0 if full else 5.0, rate=100.0 if full else 40.0)
        print(f"  {freeze}", flush=True)
        print("kill -9 during an outage ...", flush=True)
        kills = [5.0, 12.0, 20.0] if full else [2.5]
        killed = scenarios.kill_9_during_outage(work, kills, rate=100.0 if full else 40.0)
        print(f"  {killed}", flush=True)
        print("concurrent ingests ...", flush=True)
        ingests = scenarios.concurrent_ingests(work, trials=29 if full else 2, events_per_trial=200 if full else 60)
        print(f"  {ingests}", flush=True)
        print("traversal names and corrupt models ...", flush=True)
        registry = scenarios.traversal_and_corrupt_models(work)
        print(f"  {registry}", flush=True)
        print("schemathesis --checks all ...", flush=True)
        fuzz = scenarios.schemathesis_all_checks(work, max_examples=150 if full else 15, time_limit_s=420.0)
        print(f"  answered {fuzz.answered}, 5xx {fuzz.server_errors}", flush=True)
    answered = freeze.answered + killed.answered
    metrics = [
        Metric(
            "chaos.lost_decisions",
            freeze.lost + killed.lost,
            "decisions",
            goal=("<=", 0),
            note=f"answered decisions missing from Kafka, of {answered} answered across the freeze and kill -9 runs; "
            f"redelivered (at least once): {freeze.notes['redelivered'] + killed.notes['redelivered']}",
        ),
        Metric(
            "chaos.lake_duplicates",
            ingests.notes["lake_duplicates"],
            "rows",
            goal=("<=", 0),
            note=f"{ingests.answered} events × 2 topics over concurrent ingest trials; "
            f"runs refused by the lake lock {ingests.notes['runs_refused_by_the_lock']}, "
            f"dead letters {ingests.notes['dead_letters']} of {ingests.notes['malformed_sent']} malformed",
        ),
        Metric(
            "chaos.fuzz_5xx",
            fuzz.server_errors + registry.server_errors + freeze.server_errors + killed.server_errors,
            "responses",
            goal=("<=", 0),
            note="5xx from schemathesis --checks all, the registry probes and the load of the outage runs",
        ),
        Metric("chaos.requests_fuzzed", fuzz.answered, "requests", note="schemathesis --checks all, every operation"),
        Metric(
            "chaos.outages_survived",
            freeze.outages + killed.outages,
            "outages",
            note=f"broker freezes under load; {killed.kills} with kill -9 of the API mid-outage",
        ),
    ]
    cmd = "python -m benchmarks.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_result(
        "chaos",
        metrics,
        command=cmd.strip(),
        extra={
            "setup": {
                "scale": "full" if full else "quick",
                "seconds": round(time.monotonic() - started, 1),
                "two_workers": {k: v for k, v in freeze.notes.items()},
                "kill_9": {"kills_at_s": kills, **killed.notes},
                "ingest": {k: v for k, v in ingests.notes.items() if k != "ingest_errors"},
                "registry": registry.notes,
                "schemathesis_summary": fuzz.notes["schemathesis_tail"][-1500:],
            }
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
