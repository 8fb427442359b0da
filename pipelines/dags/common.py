"""What Troupe's DAG files share: the Assets that chain them, default task arguments with the failure
callback, and the data interval a task works on.

Data-aware scheduling (Airflow Assets) links the loop end to end:

    troupe_ingest (hourly) ──LAKE──▶ troupe_features ──FEATURES──▶ troupe_retrain_<problem>
        ──canary_asset(problem)──▶ troupe_ab_report (also daily, for experiments already running)

Kept import-light (stdlib and airflow.sdk only): the DAG processor parses every
DAG file often, and heavy imports belong inside the tasks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import Asset

# The ingested Parquet lake (decisions and feedback), updated by troupe_ingest.
LAKE = Asset("troupe_lake")
# The feature tables and the Feast online store, updated by troupe_features.
FEATURES = Asset("troupe_feature_store")


def canary_asset(problem: str) -> Asset:
    """A candidate of `problem` deployed as a canary (an A/B experiment started), by troupe_retrain_<problem>."""
    return Asset(f"troupe_canary_{problem}")


# Every DAG starts here and never back-fills: the loop is about now, and a
# missed hour is caught up by ingestion's offsets, not by replaying runs.
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def on_failure(context: Mapping[str, Any]) -> None:
    """Failure callback of every Troupe task and DAG run: one alert line, in the task log and in a file.

    Appends a JSON line (dag, task, run, try, error, time) to
    `<TROUPE_HOME>/alerts/failures.jsonl` — what an on-call tool tails (ours: a
    file rather than e-mail or Slack, which need credentials this project does
    not hold). Never raises: a failing callback must not hide the task's error.
    """
    try:
        ti = context.get("task_instance") or context.get("ti")
        run = context.get("dag_run")
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "dag_id": getattr(context.get("dag"), "dag_id", None) or getattr(run, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(run, "run_id", None) or getattr(ti, "run_id", None),
            "try_number": getattr(ti, "try_number", None),
            "error": f"{type(context.get('exception')).__name__}: {context.get('exception')}"
            if context.get("exception") is not None
            else context.get("reason"),
        }
        line = json.dumps(record, default=str)
        print(f"TROUPE ALERT {line}", file=sys.stderr)
        alerts = Path(os.environ.get("TROUPE_HOME") or "var") / "alerts"
        alerts.mkdir(parents=True, exist_ok=True)
        with (alerts / "failures.jsonl").open("a") as f:
            f.write(line + "\n")
    except Exception as exc:  # noqa: BLE001 — see the docstring
        print(f"TROUPE ALERT callback failed: {exc!r}", file=sys.stderr)


def default_args(retries: int, retry_delay: dt.timedelta, timeout: dt.timedelta) -> dict[str, Any]:
    """Task defaults: retries with exponential back-off, a hard per-try timeout, the failure alert."""
    return {
        "owner": "troupe",
        "on_failure_callback": on_failure,
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": retry_delay * 8,
        "execution_timeout": timeout,
    }


def interval_from_context(context: Mapping[str, Any], period: dt.timedelta) -> tuple[str, str]:
    """The [start, end) a task works on, as ISO strings (XCom-friendly).

    Order of precedence: the run's `interval_start`/`interval_end` params (the
    demo and manual runs set them); the run's data interval when it is not
    empty (scheduled runs); else the `period` that ends at the logical date
    (a manual run of a cron schedule has an empty data interval in Airflow 3).
    """
    params = context.get("params") or {}
    start, end = params.get("interval_start"), params.get("interval_end")
    if start and end:
        return str(start), str(end)
    if start or end:
        raise ValueError("params interval_start and interval_end must be given together (ISO-8601, UTC)")
    s, e = context.get("data_interval_start"), context.get("data_interval_end")
    if s is not None and e is not None and s < e:
        return s.isoformat(), e.isoformat()
    if context.get("triggering_asset_events"):
        # An asset-triggered run: the last complete period before now (retrain: yesterday, UTC). Every
        # trigger within the same period maps to the same interval, so the jobs' per-interval
        # idempotency turns the later triggers of a day into no-ops.
        anchor = _floor(dt.datetime.now(dt.UTC), period)
        return (anchor - period).isoformat(), anchor.isoformat()
    anchor = context.get("logical_date") or e or dt.datetime.now(dt.UTC)
    return (anchor - period).isoformat(), anchor.isoformat()


def _floor(t: dt.datetime, period: dt.timedelta) -> dt.datetime:
    """`t` rounded down to a multiple of `period` since the Unix epoch (UTC midnight for a day)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // period) * period


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Turn errors that a retry cannot fix into an immediate task failure (no retries).

    A missing piece of the project, a bad parameter or a malformed input fails
    the same way on every try; waiting out the retry delays would only hide it.
    Connection errors and the like still go through the task's retries.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.jobs.loop import MissingPieceError

    try:
        yield
    except (MissingPieceError, ValueError, TypeError, KeyError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
