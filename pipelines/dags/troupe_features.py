"""`troupe_features` (on each LAKE update): aggregate the ingested logs into feature tables, then materialise them to Feast.

Thin wrappers over `pipelines.jobs.features`; each task works on the run's
data interval.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import dag, get_current_context, task

from pipelines.dags.common import FEATURES, LAKE, START_DATE, default_args, fail_fast, interval_from_context, on_failure

PERIOD = dt.timedelta(hours=1)


@dag(
    dag_id="troupe_features",
    schedule=[LAKE],  # data-aware: after every ingest
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=55),
    default_args=default_args(retries=2, retry_delay=dt.timedelta(minutes=1), timeout=dt.timedelta(minutes=20)),
    params={"interval_start": "", "interval_end": ""},
    tags=["troupe", "data", "feast"],
    doc_md=__doc__,
    on_failure_callback=on_failure,
)
def troupe_features() -> None:
    @task
    def aggregate() -> dict[str, Any]:
        with fail_fast():
            from pipelines.jobs.dag_steps import aggregate_features_step

            start, end = interval_from_context(get_current_context(), PERIOD)
            return aggregate_features_step(start, end)

    @task(outlets=[FEATURES])  # the online store is fresh: retraining may start
    def materialize(aggregated: dict[str, Any]) -> dict[str, Any]:
        with fail_fast():
            from pipelines.jobs.dag_steps import materialize_features_step

            return materialize_features_step(aggregated)

    aggregated: Any = aggregate()  # an XComArg at parse time
    materialize(aggregated)


troupe_features()
