"""`troupe_ab_report` (daily, and whenever a retrain deploys a canary): the A/B report of every running experiment.

Scheduled on time OR assets: every day at 00:00 UTC for the experiments that
run, and right after any `troupe_canary_<problem>` asset update (a new canary)
so the new experiment's report exists from its first day (an experiment with no
decisions yet is reported as waiting, not as a failure).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from pipelines.dags.common import START_DATE, canary_asset, default_args, fail_fast, interval_from_context, on_failure

PERIOD = dt.timedelta(days=1)


@dag(
    dag_id="troupe_ab_report",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 0 * * *", timezone="UTC"),
        assets=canary_asset("rank") | canary_asset("slot") | canary_asset("allocate"),
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=default_args(retries=2, retry_delay=dt.timedelta(minutes=5), timeout=dt.timedelta(minutes=30)),
    params={"interval_start": "", "interval_end": "", "experiment": ""},
    tags=["troupe", "ab"],
    doc_md=__doc__,
    on_failure_callback=on_failure,
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
