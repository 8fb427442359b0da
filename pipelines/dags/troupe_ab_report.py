"""`troupe_ab_report` (daily): the A/B report of every running experiment, next to its pre-launch OPE estimate."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import dag, get_current_context, task

from pipelines.dags.common import START_DATE, default_args, fail_fast, interval_from_context

PERIOD = dt.timedelta(days=1)


@dag(
    dag_id="troupe_ab_report",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=default_args(retries=2, retry_delay=dt.timedelta(minutes=5), timeout=dt.timedelta(minutes=30)),
    params={"interval_start": "", "interval_end": "", "experiment": ""},
    tags=["troupe", "ab"],
    doc_md=__doc__,
)
def troupe_ab_report() -> None:
    @task
    def ab_report() -> list[dict[str, Any]]:
        with fail_fast():
            from pipelines.jobs.dag_steps import ab_report_step

            context = get_current_context()
            start, end = interval_from_context(context, PERIOD)
            return ab_report_step(start, end, experiment=str(context["params"].get("experiment") or "") or None)

    ab_report()


troupe_ab_report()
