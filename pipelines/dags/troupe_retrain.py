"""`troupe_retrain_<problem>` (on FEATURES updates, once per day): dataset → train → evaluate → gate → export → register → deploy canary.

Data-aware: triggered by the FEATURES asset (troupe_features), it retrains on
the last complete UTC day; later triggers of the same day find every step done
(per-interval idempotency) and do nothing. `deploy_canary` updates the
`troupe_canary_<problem>` asset, which triggers troupe_ab_report.

The gate is a branch: a candidate whose off-policy lower bound does not beat
production on the main signal, or that violates any constraint estimate, goes
to `refused` — which logs the gate's report — and nothing downstream runs, so
nothing is exported, registered or deployed. Every task is a thin wrapper that
imports its job inside the task and passes paths, never data; every job is
idempotent for the run's data interval (see pipelines/jobs/loop.py).

Run parameters (all optional): `interval_start`/`interval_end` (ISO-8601 UTC;
default the day before the logical date), `algo`, `train_config` (overrides
of the algorithm's config), `seed`, `canary_share` (share of traffic for the
candidate arm), `min_lift` (the gate's margin on the main signal),
`gate_overrides` (any other GateConfig field), `evaluate_overrides`
(EvaluateConfig fields), `candidate_exploration` (the canary arm's exploration,
which the evaluation assumes too), `holdout_share` (default 0.5: that share of
the day's sessions is kept out of training and is what the evaluation and the
gate read, so the gate's interval is an out-of-sample one; 0 = train and gate
on every row, as before — optimistic, see pipelines/jobs/dataset.split_by_session;
MaRCA's `allocate` retraining does not split).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from pipelines.dags.common import (
    FEATURES,
    START_DATE,
    canary_asset,
    default_args,
    fail_fast,
    interval_from_context,
    on_failure,
)

PERIOD = dt.timedelta(days=1)
# The algorithm each problem retrains with by default: `slot` trains SL-MGAC
# offline from the day's logs (training/algorithms/sl_mgac.py; the distilled
# student actor is what ships); `allocate` trains MaRCA offline from the
# trajectories and refits its cost and load models (pipelines/jobs/marca_retrain.py),
# shipped with the policy. Any registered algorithm can be asked for (`algo`).
DEFAULT_ALGOS = {"rank": "tscac", "slot": "sl_mgac", "allocate": "marca"}


def build_retrain_dag(problem: str) -> DAG:
    """The daily retraining DAG of one problem."""

    @dag(
        dag_id=f"troupe_retrain_{problem}",
        schedule=[FEATURES],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two runs would race to deploy canaries for the same problem
        dagrun_timeout=dt.timedelta(hours=6),
        default_args=default_args(retries=2, retry_delay=dt.timedelta(minutes=2), timeout=dt.timedelta(hours=1)),
        params={
            "interval_start": Param("", type="string", description="ISO-8601 UTC; empty = the run's data interval"),
            "interval_end": Param("", type="string"),
            "algo": Param(DEFAULT_ALGOS[problem], type="string"),
            "train_config": Param({}, type="object", description="overrides of the algorithm's config"),
            "seed": Param(0, type="integer", minimum=0),
            "canary_share": Param(0.1, type="number", exclusiveMinimum=0, maximum=1),
            "min_lift": Param(0.0, type="number", description="the main signal's lower bound must exceed this"),
            "gate_overrides": Param({}, type="object", description="other GateConfig fields"),
            "evaluate_overrides": Param({}, type="object", description="EvaluateConfig fields (estimators, CIs)"),
            "holdout_share": Param(
                0.5,
                type="number",
                minimum=0,
                exclusiveMaximum=1,
                description="share of the day's sessions kept out of training for the gate (0 = gate in sample)",
            ),
            "candidate_exploration": Param(
                {}, type="object", description="the canary arm's exploration (std_scale, temperature, epsilon)"
            ),
        },
        tags=["troupe", "retrain", problem],
        doc_md=__doc__,
        on_failure_callback=on_failure,
    )
    def retrain() -> None:
        @task(execution_timeout=dt.timedelta(minutes=30))
        def dataset() -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.dag_steps import dataset_step

                start, end = interval_from_context(get_current_context(), PERIOD)
                return dataset_step(problem, start, end)

        @task(execution_timeout=dt.timedelta(hours=2))
        def train(data: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.tracking import log_train

                params = get_current_context()["params"]
                if problem == "allocate" and str(params["algo"]) == "marca":
                    from pipelines.jobs.marca_retrain import run_train_marca

                    trained = run_train_marca(
                        data["dataset"], data["run_dir"], config=dict(params["train_config"]), seed=int(params["seed"])
                    )
                else:
                    from pipelines.jobs.dag_steps import train_step

                    trained = train_step(
                        problem,
                        data,
                        algo=str(params["algo"]),
                        config=dict(params["train_config"]),
                        seed=int(params["seed"]),
                        holdout_share=float(params["holdout_share"]),
                    )
                log_train(
                    problem, data, trained, {"seed": int(params["seed"]), "train_config": dict(params["train_config"])}
                )
                return trained

        @task(execution_timeout=dt.timedelta(minutes=30))
        def evaluate(data: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.dag_steps import evaluate_step
                from pipelines.tracking import log_evaluation

                params = get_current_context()["params"]
                evaluation = evaluate_step(
                    problem,
                    data,
                    trained,
                    dict(params["candidate_exploration"]),
                    **dict(params["evaluate_overrides"]),
                )
                log_evaluation(problem, evaluation, f"{trained['algorithm']}-{data['interval_key']}")
                return evaluation

        @task.branch(execution_timeout=dt.timedelta(minutes=5))
        def gate(evaluation: dict[str, Any]) -> str:
            with fail_fast():
                from pipelines.jobs.gate import GateConfig, run_gate
                from pipelines.tracking import log_gate

                params = get_current_context()["params"]
                cfg = GateConfig(min_lift=float(params["min_lift"]), **dict(params["gate_overrides"]))
                result = run_gate(problem, evaluation["report"], evaluation["run_dir"], cfg)
                log_gate(problem, evaluation, result, str(params["algo"]) + "-" + str(evaluation["interval_key"]),
                         {"min_lift": cfg.min_lift, **dict(params["gate_overrides"])})  # fmt: skip
                return "export" if result["passed"] else "refused"

        @task
        def refused(evaluation: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.gate import read_gate_report

                report = read_gate_report(evaluation["run_dir"])
                print(f"gate refused the {problem} candidate: {'; '.join(report['reasons'])}")
                return report

        @task(execution_timeout=dt.timedelta(minutes=20))
        def export(trained: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.export import run_export

                if trained["algorithm"] == "marca":
                    from pipelines.jobs.marca_retrain import run_export_marca

                    return run_export_marca(trained)
                return run_export(problem, trained)

        @task(execution_timeout=dt.timedelta(minutes=10))
        def register(data: dict[str, Any], exported: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.register import run_register
                from pipelines.tracking import log_register

                registered = run_register(problem, exported, data, evaluation_report=evaluation["report"])
                log_register(problem, registered)
                return registered

        @task(execution_timeout=dt.timedelta(minutes=10), outlets=[canary_asset(problem)])
        def deploy_canary(registered: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
            with fail_fast():
                from pipelines.jobs.deploy import run_deploy

                params = get_current_context()["params"]
                return run_deploy(problem, registered, evaluation, canary_share=float(params["canary_share"]))

        # XComArgs stand in for the dicts at parse time (typed Any: TaskFlow resolves them at run time).
        data: Any = dataset()
        trained: Any = train(data)
        evaluation: Any = evaluate(data, trained)
        decision: Any = gate(evaluation)
        exported: Any = export(trained)
        decision >> [exported, refused(evaluation)]
        registered: Any = register(data, exported, evaluation)
        deploy_canary(registered, evaluation)

    return retrain()


troupe_retrain_rank = build_retrain_dag("rank")
troupe_retrain_slot = build_retrain_dag("slot")
troupe_retrain_allocate = build_retrain_dag("allocate")
