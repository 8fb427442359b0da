"""`troupe ab report --experiment E`: per-arm metrics, lifts, SRM, CUPED and an always-valid test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _time(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{name}: expected an ISO date or time such as 2026-11-21T00:00Z, got {value!r}"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _weights(value: str | None) -> dict[str, float] | None:
    if not value:
        return None
    out: dict[str, float] = {}
    for part in value.split(","):
        arm, sep, w = part.partition("=")
        try:
            out[arm.strip()] = float(w)
        except ValueError:
            sep = ""
        if not sep or not arm.strip():
            raise typer.BadParameter(f"--weights: expected arm=weight[,arm=weight…], got {part!r}")
    return out


@app.command()
def report(
    experiment: str = typer.Option(..., "--experiment", help="experiment name as logged on decisions"),
    start: str | None = typer.Option(None, "--start", help="first decision time (ISO, UTC)"),
    end: str | None = typer.Option(None, "--end", help="end of the interval, exclusive (ISO, UTC)"),
    weights: str | None = typer.Option(None, "--weights", help="control=0.5,treatment=0.5 (default: experiments YAML)"),
    control: str | None = typer.Option(None, "--control", help="control arm (default 'control' or the first arm)"),
    problem: str | None = typer.Option(
        None, "--problem", help="problem whose signals to report (default: from the logs)"
    ),
    output: Path | None = typer.Option(
        None, "--output", help="report folder; default <home>/reports/ab/<experiment>/…"
    ),
) -> None:
    """Build the A/B report from the ingested decision and feedback logs."""
    from pipelines.jobs.ab_report import run_ab_report

    result = run_ab_report(
        get_settings(),
        experiment,
        _time(start, "--start"),
        _time(end, "--end"),
        output_dir=output,
        weights=_weights(weights),
        control=control,
        problem=problem,
    )
    typer.echo(Path(result["markdown"]).read_text())
    if result["srm_alert"]:
        typer.echo("SRM ALERT: the arms' sizes do not match their weights; investigate before reading lifts.", err=True)
