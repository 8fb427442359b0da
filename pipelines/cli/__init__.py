"""The `troupe` command. Each subcommand group lives in its own module under pipelines/cli/.

To add a group: write `pipelines/cli/<group>.py` with a `typer.Typer()` named
`app` (or a single function), and register it below with one line.
"""

from __future__ import annotations

import typer

from models.logging import configure_logging
from models.settings import get_settings
from pipelines.cli import (
    ab,
    airflow_cmd,
    broker,
    dataset,
    demo,
    evaluate,
    features,
    ingest,
    jobs,
    registry,
    serve,
    train,
    triton,
)
from pipelines.cli.base import TroupeGroup

app = typer.Typer(
    cls=TroupeGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Troupe: RL decision service for recommender systems. Errors print one line; --debug shows the traceback.",
)
# Foundation
app.add_typer(broker.app, name="broker", help="Start, stop or inspect the embedded Kafka broker (Tansu).")
app.add_typer(registry.app, name="registry", help="List, register, promote and roll back policy versions.")
# Data plane
app.add_typer(ingest.app, name="ingest", help="Kafka → Parquet lake, exactly once (--continuous to keep running).")
app.add_typer(dataset.app, name="dataset", help="Build per-problem transition datasets: `troupe dataset build`.")
app.add_typer(features.app, name="features", help="Feast feature store: `troupe features apply|materialize`.")
# Policies, evaluation, A/B
app.add_typer(
    train.app,
    name="train",
    help="Train policies: `troupe train --env pkg.mod:Env --config c.yaml` or `troupe train rank|slot|allocate --algo A --sim|--data D`.",
)
app.command("evaluate")(evaluate.evaluate)
app.add_typer(ab.app, name="ab", help="A/B experiment analysis: `troupe ab report --experiment E`.")
# Serving
app.add_typer(serve.app, name="serve", help="Run the decision API (uvicorn).")
app.add_typer(triton.app, name="triton", help="Export a Triton model repository; run a local Triton server.")
# The retraining loop
app.add_typer(
    airflow_cmd.app, name="airflow", help="A project airflow.cfg for a stock Airflow: `troupe airflow init|standalone`."
)
app.add_typer(jobs.app, name="loop", help="The retraining loop by hand: run DAGs, re-decide a gate, deploy a canary.")
app.command("demo")(demo.demo)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
    debug: bool = typer.Option(False, "--debug", help="On an error, print the full traceback instead of one line."),
) -> None:
    s = get_settings()
    configure_logging("DEBUG" if verbose else s.log_level, s.log_json)


@app.command("problems")
def problems() -> None:
    """List the decision problems and their observation/action/reward contracts."""
    from rich.console import Console
    from rich.table import Table

    from models.problems import PROBLEMS

    table = Table("problem", "observation", "action", "main signal", "constraints", "default policy")
    for p in PROBLEMS.values():
        constraints = ", ".join(f"{c.signal} {c.direction} {c.threshold:g}" for c in p.constraints)
        table.add_row(p.name, str(p.observation_size), p.action.kind, p.main_signal, constraints, p.default_policy)
    Console().print(table)


def main() -> None:
    app()
