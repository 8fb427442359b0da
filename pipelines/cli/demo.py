"""`troupe demo`: the whole loop once on embedded defaults (the same as `make demo`)."""

from __future__ import annotations

import typer

from pipelines.demo import DemoConfig

# One source of defaults: `troupe demo` and `make demo` (python -m pipelines.demo) both read DemoConfig.
_DEFAULTS = DemoConfig.__dataclass_fields__


def demo(
    users: int = typer.Option(_DEFAULTS["users_per_day"].default, help="simulated users per day"),
    algo: str = typer.Option(_DEFAULTS["algo"].default, help="training algorithm of the candidate"),
    canary_share: float = typer.Option(
        _DEFAULTS["canary_share"].default, help="traffic share of the candidate once it passes the gate"
    ),
    gate_estimator: str = typer.Option(
        _DEFAULTS["gate_estimator"].default or "primary",
        help="OPE estimator of the gate; 'primary' = the evaluation's own",
    ),
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
