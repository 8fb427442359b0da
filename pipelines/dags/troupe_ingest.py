"""`troupe_ingest` (hourly): drain the decision and feedback topics into Parquet, exactly once; updates the LAKE asset.

A thin wrapper over `pipelines.jobs.ingest`; the job resumes from its own
offset manifest, so a retried or repeated run neither loses nor duplicates
events.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, get_current_context, task

from pipelines.dags.common import LAKE, START_DATE, default_args, fail_fast, on_failure


@dag(
    dag_id="troupe_ingest",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # two drains of the same partitions at once would fight over the offset manifest
    dagrun_timeout=dt.timedelta(minutes=55),
    default_args=default_args(retries=3, retry_delay=dt.timedelta(minutes=1), timeout=dt.timedelta(minutes=30)),
    params={"ingest_overrides": {}},  # IngestConfig fields, e.g. {"idle_stop_s": 2.0}
    tags=["troupe", "data"],
    doc_md=__doc__,
    on_failure_callback=on_failure,
)
def troupe_ingest() -> None:
    @task(outlets=[LAKE])  # updates the lake: troupe_features runs next (data-aware scheduling)
    def ingest() -> dict[str, object]:
        with fail_fast():
            from pipelines.jobs.dag_steps import ingest_step

            return ingest_step(**dict(get_current_context()["params"]["ingest_overrides"]))

    ingest()


troupe_ingest()
