"""`make demo`: the whole loop on embedded defaults — traffic in, logs, a retrained policy, an offline gate, a canary, an A/B verdict.

    .venv/bin/python -m pipelines.demo [--users 800] [--algo tscac] [--canary-share 0.5]

Steps (README.md, "What `make demo` prints and how to run each step by hand"):

 1. prepare Airflow (`airflow db migrate` into AIRFLOW_HOME, once, in the background until step 6);
 2. start the embedded Kafka broker (Tansu) on loopback;
 3. register the `rank` behaviour policy (fixed fusion weights, Gaussian
    exploration, as ONNX) and promote it;
 4. `feast apply`, start the decision API (uvicorn) serving it;
 5. day 1: simulated users call the API and send their feedback;
 6. `troupe_ingest` → Parquet lake (exactly once); `troupe_features` →
    feature tables → Feast online store;
 7. `troupe_retrain_rank`: dataset → train → evaluate (OPE against production)
    → gate → (export → register → deploy the candidate as a 50/50 canary);
 8. if the gate passed: day 2 with the canary live, ingest again;
 9. `troupe_ab_report`: the measured lift with its CI, printed next to the OPE
    estimate made before launch; plots written.
Everything started is stopped (finally), then a summary table is printed.

Each run works in its own folder `<TROUPE_HOME>/demo/<UTC stamp>/` (so it
never mixes with earlier runs); Airflow's DB lives in `AIRFLOW_HOME`
(`var/airflow` via the Makefile), migrated once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A short, conservative offline run (under a minute on 2 cores). Measured on simulators 2.0 (README):
# the old budget (20 × 20 steps from a 300-step behaviour-cloning start) left the actor far from the
# logged actions (effective sample size 0–1 of 3,000 rows: nothing the gate can evaluate). The actor is
# cloned onto the logging policy first (2,000 steps, σ started at the behaviour's), then takes 3 × 20
# small RCPO steps (lr 1e-4) aimed 3 % inside every threshold. With a constant cloning step (3e-3) this
# left the support in 7 of 10 demo runs (benchmarks/results/demo_reliability.json before 2026-12-04):
# the clone itself sat 0.2–0.3 σ off the logged weights and kept only 11 % of the rows' effective
# weight. Now cloning starts at step 1e-2 and decays to 0 (clone: 56 % of the rows), and the trust
# region (training/rl/trust_region.py; it reads no rewards) steps the candidate back toward the clone
# until its ESS on the day is >= 30 % of the rows. On three demo days (rule below) this budget needed
# no step back (ESS 48–54 %) and gave DR +2.0 to +2.1 s/decision, lower bounds +0.7 to +0.9, every
# constraint kept; simulator truth on the day's world and the next +1.9 to +2.4 %. lr 3e-4 gained no
# more truth (+1.8 to +2.5 %) and needed the trust region (step 0.22 on one seed); lr 1e-3 needed a step
# of 0.03, whose estimate no longer excluded 0. Retrained on the ten days of the 150-user benchmark
# (README), 3 × 60 steps passed the gate on 8 of 10 too (other days), truth +1.2 to +2.1 %: no better.
# 2026-12-04, at 400 users a day: the clone's own error was most of the candidate's distance from the logs
# (ESS 0.55–0.62 with or without the 60 RCPO steps) and, being a random direction, most of the spread of
# its estimate: retrained on one logged day with training seeds 7–10 the DR estimate was +0.28, +1.69,
# +1.16, +0.89 s/decision (half-width 0.52–0.54; seed 7 refused). Cloning twice as long on twice the
# rows per step (4,000 × 1,024) keeps ESS 0.86–0.92 and halves the half-width (0.20–0.27); the estimate
# then is the RCPO steps' own (+0.13 to +0.63 at lr 1e-4). At lr 3e-4 the trust region still needs no
# step back (ESS 0.75–0.86) and the same day gave +0.59 [+0.27, +0.90] (seed 7) and +1.04 [+0.76, +1.32]
# (seed 8), another +1.27 [+0.86, +1.68] (was +1.12 [+0.56, +1.68]); lr 1e-3 ran to ESS 0.39 and
# +0.03 [−0.80, +0.87]. These are the gate's in-sample estimates (the day that trains also evaluates);
# the A/B test on day 2 is the out-of-sample check.
# 2026-12-04, later: the clone now starts at the logged moments and fits the served policy (trainer.warm_start):
# ESS 0.95 on its own. Judged against the simulator's truth (benchmarks/demo_reliability.candidate_truth), the
# in-sample estimates above were optimistic by 0.2–1.5 s/decision, so the gate now reads only the half of the day's
# sessions that training never saw (`holdout_share`). Trained on one half of a logged day, training seeds 1–3:
# lr 3e-4 gave held-out DR +0.49 to +0.63 (truth +0.35 to +0.48), lr 1e-3 +0.65 to +0.70 [lower bounds +0.33 to
# +0.37] (truth +0.45 to +0.97), every interval covering the truth; hence 1e-3.
DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    "run": {"iterations": 3, "offline_steps": 20},
    "algo": {
        "init_std": 0.03,
        "warm_start_steps": 4000,
        "warm_start_lr": 1e-2,
        "minibatch_size": 1024,
        "actor_lr": 1e-3,
        "margin": 0.03,
    },
    "trust_region": {"min_ess_share": 0.3},
}


# Printed when the gate refuses, one remedy per kind of reason: the gate is never loosened, so the remedies
# are more evidence, a candidate trained differently, or a day-one rule that keeps its own constraints.
HINT_LOWER_BOUND = (
    "the lift's interval still reaches zero: give it more evidence (`--users 1600`: twice the decisions, an "
    "interval about 1.4x narrower) or another day (`--seed 4`); if the estimate itself is near zero the "
    "candidate is genuinely no better than production: another learner (`--algo tscac`) or another day"
)
HINT_CONSTRAINT = (
    "the candidate gives up a constraint: aim the constrained learner further inside the thresholds "
    '(`--train-config \'{"algo": {"margin": 0.08}}\'`) or try the other one (`--algo tscac`); if production\'s own '
    "estimate breaks it too, the day-one rule does (`--behaviour-weights`, see README)"
)
HINT_OVERLAP = (
    "the candidate moved too far from the logged actions to be evaluated: keep the trust region on and ask "
    'for more overlap (`--train-config \'{"trust_region": {"min_ess_share": 0.5}}\'`), train fewer steps, or log '
    "with more exploration"
)


HINT_DAY_BELOW = (
    "production itself logged {signals} below the threshold on this day: the constraint has less slack than one "
    "simulated day varies (README: comments per decision move by about ±0.07 from day to day), so no candidate "
    "close to production can show it; run another day (`--seed 4`; more users do not help, the day's world sets the level)"
)


def what_to_try(reasons: list[str], report: str, production: dict[str, float] | None = None) -> str:
    """The remedies for the gate's reasons, in their order, and where the full report is.

    `production` holds the logged (on-policy) mean of each signal on the day: a
    constraint production broke too is the day's, not the candidate's doing.
    """
    from models.problems import RANK

    below = [
        c.signal
        for c in RANK.constraints
        if production and c.signal in production and not c.satisfied(production[c.signal])
    ]
    hints: list[str] = []
    for reason in reasons:
        if reason.startswith("constraint "):
            signal = reason.split()[1]
            hint = HINT_DAY_BELOW.format(signals=", ".join(below)) if signal in below else HINT_CONSTRAINT
        elif reason.startswith("effective sample size"):
            hint = HINT_OVERLAP
        else:
            hint = HINT_LOWER_BOUND
        if hint not in hints:
            hints.append(hint)
    return "; ".join(hints) + f". The gate's report: {report}/gate.md and gate.png."


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and choices of one demo run; the defaults finish in well under 10 minutes on 2 cores."""

    users_per_day: int = 800
    """Simulated users on day 1, whose logs train and gate the candidate (about 32 decisions each: about 25,600;
    half train, half gate). Measured with the held-out gate (benchmarks/results/demo_reliability.json, quiet host,
    2026-12-04): 800 users showed the whole loop in 9 of 10 runs (median 116 s), 400 users in 8 of 10 (median
    94 s; the held-out interval about ±0.35 s/decision against candidates truly worth about +0.5). Before that:
    Measured (2026-12-04, shared 2-core host): at 150 users the gate's DR interval had a half-width of
    about 1 s/decision against a candidate worth about 2 % (1–2 s), and 2 of 10 runs were refused for
    the lower bound only (+0.80 [−0.13, +1.74]). The interval shrinks like 1/√users: 400 users give
    a half-width of about 0.6 s (+1.27 [+0.69, +1.85] on the default seed). Since the traffic
    generator stopped limiting a day (aiohttp, pipelines/traffic.py) a day of 400 users takes about
    40 s at load average 5–7, the whole loop about 125 s; at 150 users it took about 50 s a day
    with httpx."""
    ab_users_per_day: int = 200
    """Simulated users on day 2, the canary's A/B day. Fewer than day 1: the gate's evidence is day 1's,
    and day 2 only has to show the A/B test next to the estimate. At 200 users (about 3,200 decisions
    an arm) its CI on the lift is about ±4 %, narrower than at the old 150-user days (±5.5 %); a day of
    400 took 71 s of a 268 s run at load average 9 (2026-12-04)."""
    concurrency: int = 32
    """Requests in flight at once."""
    canary_share: float = 0.5
    """Share of users the candidate serves once it passes the gate."""
    algo: str = "rcpo"
    """Training algorithm for the candidate (README: why RCPO by default)."""
    train_config: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_TRAIN_CONFIG)))
    """Overrides of the algorithm's config."""
    min_lift: float = 0.0
    """Gate margin on the main signal (seconds of watch time per decision)."""
    gate_estimator: str | None = "dr"
    """OPE estimator the gate decides with; None = the evaluation's primary one (NCIS for rank).
    Departure from the DAG's default, marked: on a demo-sized day (under a thousand decisions, an
    18-dimensional continuous action) the purely importance-weighted estimates (NCIS) are too wide
    to exclude zero. Doubly robust = the reward model's estimate plus the importance-weighted
    correction of its errors: narrower than NCIS, and not fooled when the linear reward model misses
    the candidate's change — gating on the direct method alone refused one demo run in four for
    that (DM −0.008 [−0.21, +0.20] s/decision where DR said +6.0 [+1.3, +10.8]). The A/B test
    then measures how far the estimate was off."""
    behaviour_std: float = 0.03
    """Exploration σ of the behaviour policy (on fusion weights in [0, 1]). Small enough that a draw
    rarely leaves the box: a weight clipped to exactly 0 or 1 is logged there, behaviour cloning then
    drives the learners' tanh-Gaussian actor to the edge, whose exported σ collapses, and the
    candidate can no longer be evaluated on the logs (effective sample size 0 with σ = 0.15)."""
    behaviour_weights: tuple[float, ...] = (0.15, 0.2, 0.6, 0.2, 0.85, 0.4)
    """Fusion weights (watch time, click, like, follow, comment, share) of the day-one production rule,
    every stage: a team's cautious hand-tuned rule that keeps its constraints and leaves watch time on
    the table. Ground truth on simulators 2.0, 10 worlds (seeds 1–10) of 100 users, exploration σ 0.03
    (2026-12-04): 90–105 s of watch time per decision (mean 95.5), clicks 3.54–3.68, likes 1.96–2.22,
    follows 0.326–0.399, shares 0.55–0.71 (every one of these met on every world, by 7–23 %), comments
    0.97–1.22 (mean 1.135, sd 0.072; below 1.1 on 2 of 10 worlds). No weighting keeps the comment
    constraint with room on every world: the world sets the level (every rule tried, from comments-only
    to the old watch 0.5 rule, spans the same 0.95–1.25 band and moves it by at most 0.05 at these
    watch weights), so the demo's seed is chosen for a day that meets it (`seed`). The room retraining
    is for: watch weight 0.2 gives +12 % watch time at −0.016 comments, 0.3 gives +35 % at −0.05.
    The previous rule (watch 0.06, comment 0.9) had 23 % less watch time and the same comments (mean
    1.151), but its weights sat 2 σ from the box's edge: clipped draws and the tanh actor's curvature
    there made the behaviour clone 0.6 σ off in watch weight with half the σ (the clone alone kept 11 %
    of the rows' effective weight). Every weight here is at least 0.15 from an edge (5 σ)."""
    holdout_share: float = 0.5
    """Share of day 1's sessions the retraining keeps out of training; the evaluation and the gate read only
    those (troupe_retrain's `holdout_share`), so the gate's interval is out of sample. 0 = train and gate on
    every row: measured against the simulator's truth on the demo's day, that interval covered the
    candidate's true lift in 0 of 5 runs (it sat 0.2–1.5 s/decision above it; pipelines/jobs/dataset.py)."""
    seed: int = 7
    """Seeds the simulated days (day 1: seed + 1, day 2: seed + 2) and training. Chosen, and said so:
    seed 7's first day is one on which the day-one rule meets every constraint (comments 1.22 per
    decision); on 2 of 10 worlds it does not (`behaviour_weights`), and then the gate refuses every
    candidate near production for the day's comments, whatever the candidate does."""
    home: Path | None = None
    """Working folder; None = <TROUPE_HOME or ./var>/demo/<UTC stamp>."""
    airflow_home: Path | None = None
    """Airflow's folder; None = AIRFLOW_HOME or <TROUPE_HOME or ./var>/airflow."""

    def __post_init__(self) -> None:
        if self.users_per_day < 2 or self.ab_users_per_day < 2:
            raise ValueError(
                f"DemoConfig.users_per_day, ab_users_per_day: need >= 2 users, got {self.users_per_day}, "
                f"{self.ab_users_per_day}"
            )
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"DemoConfig.holdout_share: expected [0, 1), got {self.holdout_share}")
        if self.concurrency < 1:
            raise ValueError(f"DemoConfig.concurrency: must be >= 1, got {self.concurrency}")
        if not 0.0 < self.canary_share <= 1.0:
            raise ValueError(f"DemoConfig.canary_share: expected (0, 1], got {self.canary_share}")
        if not self.behaviour_std > 0:
            raise ValueError(f"DemoConfig.behaviour_std: must be > 0, got {self.behaviour_std}")
        if len(self.behaviour_weights) != 6 or not all(0.0 <= w <= 1.0 for w in self.behaviour_weights):
            raise ValueError(
                f"DemoConfig.behaviour_weights: expected 6 weights in [0, 1], got {self.behaviour_weights}"
            )


def merged_train_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """DEFAULT_TRAIN_CONFIG with `overrides` laid over it section by section (`{"algo": {"margin": 0.08}}`
    changes the margin and keeps the rest of the demo's budget, the trust region included)."""
    merged: dict[str, Any] = json.loads(json.dumps(DEFAULT_TRAIN_CONFIG))
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


class Progress:
    """`[k/N] what … done in 3.2 s` lines, flushed at once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.k = 0
        self.t0 = time.perf_counter()
        self.timings: list[tuple[str, float]] = []

    def line(self, text: str) -> None:
        print(text, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.k += 1
        self.line(f"[{self.k}/{self.total}] {what} …")
        t = time.perf_counter()
        yield
        took = time.perf_counter() - t
        self.timings.append((what, took))
        self.line(f"      done in {took:.1f} s (total {time.perf_counter() - self.t0:.0f} s)")


def _wait_for_lake(expected_decisions: int, p: Progress, attempts: int = 5) -> dict[str, Any]:
    """Run `troupe_ingest` until the lake holds the day's decisions (the API's producer sends asynchronously)."""
    from pipelines.airflow_runtime import run_dag

    total = 0
    out: dict[str, Any] = {}
    for attempt in range(attempts):
        res = run_dag("troupe_ingest", conf={"ingest_overrides": {"idle_stop_s": 2.0}})
        out = res.task_returns.get("ingest", {})
        rows = out.get("rows", {})
        total += int(sum(v for k, v in rows.items() if "decision" in k))
        p.line(f"      ingest run {attempt + 1}: {json.dumps(rows)} rows, {out.get('dead_letters', 0)} dead letters")
        if total >= expected_decisions:
            break
        time.sleep(2.0)
    out["decisions_total"] = total
    return out


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole loop once; returns the summary (also printed)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(os.environ.get("TROUPE_HOME") or "var").resolve()
    home = (cfg.home or base / "demo" / stamp).resolve()
    airflow_home = (cfg.airflow_home or Path(os.environ.get("AIRFLOW_HOME") or base / "airflow")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    p = Progress(total=9)
    summary: dict[str, Any] = {"home": str(home), "started_at": dt.datetime.now(dt.UTC).isoformat()}
    p.line(f"Troupe demo — working folder {home}")

    # Everything below reads TROUPE_* from the environment (get_settings), the Airflow tasks included.
    os.environ["TROUPE_HOME"] = str(home)
    os.environ["TROUPE_EXPERIMENTS_FILE"] = str(home / "experiments.yaml")
    from models.settings import get_settings

    get_settings.cache_clear()

    from pipelines.airflow_runtime import migrate_db, prepare_airflow

    # `airflow db migrate` is a subprocess of its own (18 s of a 183 s run at load average 8 on 2 cores,
    # 2026-12-04): it runs in the background while the broker, the API and day 1 start, and the demo waits
    # for it only before its first DAG run. Nothing before that imports Airflow (prepare_airflow checks).
    migrations = ThreadPoolExecutor(max_workers=1, thread_name_prefix="airflow-migrate")
    with p.step(f"prepare Airflow (AIRFLOW_HOME={airflow_home}): `airflow db migrate` once, in the background"):
        t_migrate = time.perf_counter()
        migrating = migrations.submit(migrate_db, airflow_home, environ=dict(os.environ))

    from models.registry import ModelRegistry
    from pipelines.airflow_runtime import run_dag
    from pipelines.behaviour_policy import register_behaviour_policy
    from pipelines.services import apply_feature_store, running_api, running_broker
    from pipelines.traffic import TrafficConfig, run_day

    settings = get_settings()
    admin_key = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        stack.callback(migrations.shutdown, wait=True)
        with p.step("start the Kafka broker (Tansu, embedded)"):
            broker = stack.enter_context(running_broker(settings, logs / "broker.log"))
            os.environ["TROUPE_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            get_settings.cache_clear()
            p.line(f"      broker at {broker.bootstrap_servers}")

        with p.step("register and promote the rank behaviour policy (ONNX)"):
            stage = tuple(float(w) for w in cfg.behaviour_weights)
            behaviour = register_behaviour_policy(
                ModelRegistry(settings.registry_dir), std=cfg.behaviour_std, mean=stage * 3
            )
            p.line(
                f"      rank/{behaviour.manifest.version}: fixed fusion weights {stage} (watch time, click, like, follow, "
                f"comment, share; every stage), exploration σ = {cfg.behaviour_std}"
            )
            summary["behaviour_version"] = behaviour.manifest.version

        with p.step("feast apply, then start the decision API (uvicorn) serving the behaviour policy"):
            env = {
                "TROUPE_HOME": str(home),
                "TROUPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "TROUPE_PROBLEMS": "rank",
                "TROUPE_EXPERIMENTS_FILE": str(home / "experiments.yaml"),
                "TROUPE_REGISTRY_WATCH_S": "1.0",
            }
            env["TROUPE_FEAST_REPO"] = str(apply_feature_store(settings))
            api = stack.enter_context(running_api(env, logs / "api.log", admin_key))
            os.environ["TROUPE_SERVING_URL"] = api.url
            os.environ["TROUPE_DEPLOY_ADMIN_KEY"] = admin_key
            p.line(f"      decision API at {api.url} (log {logs / 'api.log'})")

        with p.step(f"day 1: {cfg.users_per_day} simulated users call the API and send feedback"):
            day1 = run_day(
                TrafficConfig(api.url, users=cfg.users_per_day, concurrency=cfg.concurrency, seed=cfg.seed + 1),
                on_progress=p.line,
            )
            d1 = day1.to_dict()
            summary["day1"] = d1
            p.line(
                f"      {d1['requests']} decisions ({d1['requests_per_s']} req/s), {d1['feedback']} feedback, "
                f"{d1['fallbacks']} fallbacks, {d1['errors']} errors"
            )
        day1_interval = day1.interval()

        with p.step("troupe_ingest (Kafka → Parquet, exactly once) and troupe_features (→ Feast)"):
            t_wait = time.perf_counter()
            migrated_now = migrating.result()  # re-raises the migration's error, if it failed
            prepare_airflow(airflow_home, quiet=True)  # the DB is migrated: this only sets the environment now
            quiet_third_party_warnings(airflow_ready=True)
            p.line(
                f"      airflow db migrate: {'done' if migrated_now else 'already done'} "
                f"{time.perf_counter() - t_migrate:.0f} s after it started (waited {time.perf_counter() - t_wait:.1f} s)"
            )
            summary["ingest_day1"] = _wait_for_lake(day1.requests - day1.errors, p)
            # Feast prints its own progress bars; they go to the log file, the demo prints the outcome.
            with (logs / "features.log").open("a") as flog, contextlib.redirect_stdout(flog):
                features = run_dag("troupe_features", conf=day1_interval)
            p.line(f"      troupe_features: {features.state} {features.task_states}")

        with p.step("troupe_retrain_rank: dataset → train → evaluate → gate → export → register → deploy"):
            conf = {
                **day1_interval,
                "algo": cfg.algo,
                "train_config": cfg.train_config,
                "seed": cfg.seed,
                "canary_share": cfg.canary_share,
                "min_lift": cfg.min_lift,
                "holdout_share": cfg.holdout_share,
                "evaluate_overrides": {"sequential": False},
                "gate_overrides": {"estimator": cfg.gate_estimator} if cfg.gate_estimator else {},
            }
            retrain = run_dag("troupe_retrain_rank", conf=conf)
            p.line(f"      tasks: {retrain.task_states}")
        data = retrain.task_returns.get("dataset", {})
        run_folder = Path(data.get("run_dir", home))
        gate = json.loads((run_folder / "gate" / "gate.json").read_text())
        summary["gate"] = {"passed": gate["passed"], "reasons": gate["reasons"], "report": str(run_folder / "gate")}
        _print_gate(gate, p)

        deployed = retrain.task_returns.get("deploy_canary")
        if not gate["passed"] or not deployed:
            p.line("      the candidate was refused: nothing was deployed, production keeps serving; no A/B test.")
            hint = what_to_try(gate["reasons"], summary["gate"]["report"], _production_means(run_folder))
            p.line(f"      what to try: {hint}")
            summary["gate"]["what_to_try"] = hint
            p.k += 2
        else:
            summary["deploy"] = deployed
            arms = ", ".join(f"{a['name']}={a['version']} ({a['weight']:.0%})" for a in deployed["arms"])
            p.line(f"      canary live: experiment {deployed['experiment']}: {arms}")
            with p.step(f"day 2: {cfg.ab_users_per_day} simulated users with the canary live; ingest again"):
                day2 = run_day(
                    TrafficConfig(api.url, users=cfg.ab_users_per_day, concurrency=cfg.concurrency, seed=cfg.seed + 2),
                    on_progress=p.line,
                )
                summary["day2"] = day2.to_dict()
                summary["ingest_day2"] = _wait_for_lake(day2.requests - day2.errors, p)
            with p.step("troupe_ab_report: measured lift vs the OPE estimate made before launch"):
                conf = {**day2.interval(), "experiment": deployed["experiment"]}
                ab = run_dag("troupe_ab_report", conf=conf)
                results = ab.task_returns.get("ab_report") or []
                summary["ab"] = results[0]["result"] if results else None
            _print_ab(summary, deployed, p)
    # The broker and the API are stopped here, whatever happened above.
    p.line("      decision API and broker stopped")
    summary["seconds"] = round(time.perf_counter() - p.t0, 1)
    summary["timings"] = {what: round(s, 1) for what, s in p.timings}
    (home / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    return summary


def _production_means(run_folder: Path) -> dict[str, float] | None:
    """Production's logged mean of every signal on the evaluated day (the evaluation report's on-policy means)."""
    path = run_folder / "evaluate" / "evaluation.json"
    if not path.is_file():
        return None
    means = json.loads(path.read_text()).get("behaviour_on_policy_mean")
    return {k: float(v) for k, v in means.items()} if isinstance(means, dict) else None


def _print_gate(gate: dict[str, Any], p: Progress) -> None:
    main = gate["main"]
    lo, hi = main["difference_ci"]
    p.line(
        f"      gate ({gate['estimator']}): {gate['main_signal']} candidate − production = {main['difference']:+.3f} "
        f"[{lo:.3f}, {hi:.3f}]; constraints: "
        + ", ".join(f"{c['signal']} {c['value']:.3g}{'✓' if c['satisfied'] else '✗'}" for c in gate["constraints"])
    )
    if gate["passed"]:
        p.line("      gate PASSED")
    else:
        p.line("      gate REFUSED: " + "; ".join(gate["reasons"]))


def _ab_main(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate arm's measured relative lift on the main signal, from the A/B report JSON."""
    ab = summary.get("ab")
    if not ab:
        return None
    report = json.loads(Path(ab["report"]).read_text())
    main = report["main_signal"]
    vs = report["signals"][main]["vs_control"]
    arm = "candidate" if "candidate" in vs else next(iter(vs), None)
    if arm is None:
        return None
    rel = vs[arm]["per_decision"]["relative"]
    verdict = report.get("verdicts", {}).get(main, {}).get(arm, {}).get("verdict")
    return {
        "signal": main,
        "arm": arm,
        "relative": rel,
        "srm_alert": report["srm"]["alert"],
        "plot": ab["plot"],
        "verdict": verdict,
        "decision": report.get("decision", {}).get(arm),
    }


def _print_ab(summary: dict[str, Any], deployed: dict[str, Any], p: Progress) -> None:
    measured = _ab_main(summary)
    ope = deployed["ope"]
    if measured is None:
        p.line("      no A/B result (no candidate decisions in the lake?)")
        return
    rel = measured["relative"]
    p.line(
        f"      A/B measured lift on {measured['signal']} per decision: {rel['value']:+.2%} "
        f"[{rel['ci_low']:+.2%}, {rel['ci_high']:+.2%}]  (SRM alert: {measured['srm_alert']})"
    )
    if ope.get("relative_lift") is not None:
        lo, hi = ope["relative_lift_ci"]
        p.line(
            f"      OPE estimate before launch ({ope['estimator']}): {ope['relative_lift']:+.2%} [{lo:+.2%}, {hi:+.2%}]"
        )
    if measured.get("decision"):
        p.line(f"      A/B verdict (primary test): {measured['decision']}")
    p.line(f"      plots: {measured['plot']}")


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Troupe demo — summary", show_lines=False)
    table.add_column("step", overflow="fold")
    table.add_column("result", overflow="fold")
    d1 = summary.get("day1", {})
    table.add_row("behaviour policy", f"rank/{summary.get('behaviour_version')}")
    table.add_row(
        "day 1 traffic", f"{d1.get('requests')} decisions, {d1.get('feedback')} feedback, {d1.get('errors')} errors"
    )
    ing = summary.get("ingest_day1", {})
    table.add_row("ingested (day 1)", f"{ing.get('decisions_total')} decisions")
    gate = summary.get("gate", {})
    table.add_row("gate", "PASSED" if gate.get("passed") else "REFUSED: " + "; ".join(gate.get("reasons", [])))
    if not gate.get("passed") and gate:
        table.add_row("what to try", gate.get("what_to_try", "-"))
    if "deploy" in summary:
        dep = summary["deploy"]
        ope = dep["ope"]
        table.add_row("canary", f"{dep['experiment']}: candidate {dep['version']} at {dep['canary_share']:.0%}")
        table.add_row(
            f"OPE lift ({ope['estimator']}, before launch)",
            f"{ope['difference']:+.2f} s/decision [{ope['difference_ci'][0]:+.2f}, {ope['difference_ci'][1]:+.2f}]"
            + (
                f" = {ope['relative_lift']:+.2%} [{ope['relative_lift_ci'][0]:+.2%}, {ope['relative_lift_ci'][1]:+.2%}]"
                if ope.get("relative_lift") is not None
                else ""
            ),
        )
        measured = _ab_main(summary)
        if measured is not None:
            rel = measured["relative"]
            table.add_row(
                "A/B measured lift (day 2)",
                f"{rel['value']:+.2%} [{rel['ci_low']:+.2%}, {rel['ci_high']:+.2%}], SRM alert {measured['srm_alert']}",
            )
            table.add_row("A/B verdict (primary test)", str(measured.get("decision") or "-"))
            table.add_row("A/B report", str(Path(summary["ab"]["markdown"])))
        truth = summary.get("day2", {}).get("truth_per_arm", {})
        if "candidate" in truth and "control" in truth:
            c, b = truth["candidate"].get("watch_time", 0.0), truth["control"].get("watch_time", 0.0)
            # The same day summed on the client side from the simulator's responses: it should agree closely
            # with the A/B report, which reads the decisions back through Kafka, the lake and the join.
            table.add_row(
                "client-side check (day 2)",
                f"watch time {c:.1f} vs {b:.1f} s/decision = {c / b - 1:+.2%} (traffic generator's own sums)"
                if b
                else "-",
            )
    table.add_row("total time", f"{summary.get('seconds')} s")
    table.add_row("working folder", summary["home"])
    Console(width=120).print(table)


def quiet_third_party_warnings(*, airflow_ready: bool = False) -> None:
    """Hide third-party deprecation notices (pathspec via Airflow, torch's legacy ONNX exporter); tests still see them.

    Feast (`feast/feature_store.py`: simplefilter("once", DeprecationWarning)) and
    Airflow (`airflow/configuration.py`: "default" for its own modules) put their
    filters in front of ours when first imported, so they are imported first
    and ours go in front of theirs. Airflow only once `prepare_airflow` has set
    its environment (`airflow_ready`): importing its configuration earlier would
    fix the DAG folder to the default one, and `dag.test()` would find no DAGs.
    """
    import feast  # noqa: F401

    if airflow_ready:
        import airflow.configuration  # noqa: F401
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Airflow's in-process execution API (dag.test) uses starlette's TestClient, whose notice is a UserWarning.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")


def main(argv: list[str] | None = None) -> int:
    # The demo's own lines would be buried under notices about third-party code.
    quiet_third_party_warnings()
    parser = argparse.ArgumentParser(description="Run Troupe's whole loop once on embedded defaults.")
    parser.add_argument("--users", type=int, default=DemoConfig.users_per_day, help="simulated users on day 1")
    parser.add_argument(
        "--ab-users", type=int, default=DemoConfig.ab_users_per_day, help="simulated users on day 2 (the A/B test)"
    )
    parser.add_argument("--algo", default=DemoConfig.algo, help="training algorithm of the candidate")
    parser.add_argument("--canary-share", type=float, default=DemoConfig.canary_share)
    parser.add_argument("--min-lift", type=float, default=DemoConfig.min_lift, help="gate margin (s/decision)")
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument(
        "--gate-estimator", default=DemoConfig.gate_estimator, help="OPE estimator of the gate ('primary' = NCIS)"
    )
    parser.add_argument(
        "--behaviour-weights",
        default=",".join(f"{w:g}" for w in DemoConfig.behaviour_weights),
        help="day-one rule: 6 comma-separated fusion weights (watch time, click, like, follow, comment, share)",
    )
    parser.add_argument(
        "--behaviour-std", type=float, default=DemoConfig.behaviour_std, help="day-one rule's exploration σ"
    )
    parser.add_argument(
        "--train-config", default="{}", help="JSON overrides, per section, of the demo's training config"
    )
    parser.add_argument(
        "--holdout-share", type=float, default=DemoConfig.holdout_share,
        help="share of day 1's sessions kept out of training for the gate (0 = gate on the training rows)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cfg = DemoConfig(
        users_per_day=args.users,
        ab_users_per_day=args.ab_users,
        algo=args.algo,
        canary_share=args.canary_share,
        min_lift=args.min_lift,
        seed=args.seed,
        behaviour_weights=tuple(float(w) for w in args.behaviour_weights.split(",")),
        behaviour_std=args.behaviour_std,
        gate_estimator=None if args.gate_estimator in ("primary", "", None) else args.gate_estimator,
        train_config=merged_train_config(json.loads(args.train_config)),
        holdout_share=args.holdout_share,
    )
    try:
        run_demo(cfg)
    except KeyboardInterrupt:
        print("interrupted; everything the demo started has been stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — the demo's last word: what failed, and that nothing is left running
        import traceback

        traceback.print_exc()
        print(
            f"\ndemo FAILED: {type(exc).__name__}: {exc}\n"
            "Everything it started has been stopped; the logs are under <working folder>/logs.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
