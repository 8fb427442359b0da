"""`troupe demo`: the whole loop once on embedded defaults (the same as `make demo`)."""

from __future__ import annotations

import typer


def demo(
    users: int = typer.Option(50, help="simulated users per day"),
    algo: str = typer.Option("rcpo", help="training algorithm of the candidate"),
    canary_share: float = typer.Option(0.5, help="traffic share of the candidate once it passes the gate"),
    gate_estimator: str = typer.Option("dm", help="OPE estimator of the gate; 'primary' = the evaluation's own"),
) -> None:
    """Broker, decision API, a simulated day, ingest, features, retrain, gate, canary, another day, A/B report."""
    from pipelines.demo import main

    args = [
        "--users",
        str(users),
        "--algo",
        algo,
        "--canary-share",
        str(canary_share),
        "--gate-estimator",
        gate_estimator,
    ]
    raise typer.Exit(main(args))
