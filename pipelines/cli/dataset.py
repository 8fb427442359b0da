"""`troupe dataset build`: decisions ⋈ feedback → per-problem transitions + dataset card (pipelines/jobs/dataset.py)."""

from __future__ import annotations

import datetime as dt
import json

import typer

from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _utc(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO-8601 time like 2026-11-21T00:00:00Z, got {value!r}", param_hint=name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@app.command()
def build(
    problem: list[str] = typer.Option(None, "--problem", "-p", help="Problem(s) to build; default: all."),
    window_s: float = typer.Option(3600.0, "--window-s", help="Attribution window: later feedback is counted as late."),
    gap_s: float = typer.Option(1800.0, "--gap-s", help="Inactivity gap that ends a session without session_id."),
    missing: str = typer.Option("drop", help="Decisions without in-window feedback: 'drop' or 'zero'."),
    start: str = typer.Option(None, help="Only decisions at or after this time (ISO-8601, UTC)."),
    end: str = typer.Option(None, help="Only decisions before this time (ISO-8601, UTC)."),
) -> None:
    """Build <TROUPE_HOME>/data/datasets/<problem>/{transitions.parquet,card.json}; prints each card's summary."""
    from models.problems import problem_names
    from pipelines.jobs.dataset import DatasetConfig, build_dataset

    if missing not in ("drop", "zero"):
        raise typer.BadParameter(f"expected 'drop' or 'zero', got {missing!r}", param_hint="--missing")
    s = get_settings()
    for name in problem or problem_names():
        cfg = DatasetConfig.from_settings(
            s,
            name,
            attribution_window_s=window_s,
            inactivity_gap_s=gap_s,
            missing_feedback=missing,
            start=_utc(start, "--start"),
            end=_utc(end, "--end"),
        )
        result = build_dataset(cfg)
        card = result.card
        summary = {"problem": name, "path": str(result.path), "rows": card["rows"], "join_rate": card["join_rate"]}
        typer.echo(json.dumps({**summary, "counts": card["counts"]}))
