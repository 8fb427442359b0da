"""What Troupe's DAG files share: default task arguments and the data interval a task works on.

Kept import-light (stdlib only): the DAG processor parses every DAG file often,
and heavy imports belong inside the tasks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

# Every DAG starts here and never back-fills: the loop is about now, and a
# missed hour is caught up by ingestion's offsets, not by replaying runs.
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def default_args(retries: int, retry_delay: dt.timedelta, timeout: dt.timedelta) -> dict[str, Any]:
    """Task defaults: retries with exponential back-off, and a hard per-try timeout."""
    return {
        "owner": "troupe",
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
    anchor = context.get("logical_date") or e or dt.datetime.now(dt.UTC)
    return (anchor - period).isoformat(), anchor.isoformat()


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
