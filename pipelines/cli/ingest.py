"""`troupe ingest`: Kafka → Parquet lake, exactly once (pipelines/jobs/ingest.py)."""

from __future__ import annotations

import json
import signal

import typer

from models.settings import get_settings

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@app.callback()
def ingest_cmd(
    continuous: bool = typer.Option(
        False, "--continuous", help="Keep running until SIGINT/SIGTERM (then commit and stop); default: drain and stop."
    ),
    commit_rows: int = typer.Option(50_000, help="Commit after this many messages…"),
    commit_interval_s: float = typer.Option(5.0, help="…or after this many seconds with anything pending."),
    on_offset_reset: str = typer.Option(
        "fail",
        help="When a partition's offsets went backwards: 'fail' (stop, report) or 'restart' (record, re-ingest).",
    ),
    lock_wait: float = typer.Option(
        0.0, help="Seconds to wait when another run holds the lake (one writer per lake); then exit with an error."
    ),
) -> None:
    """Ingest the decision and feedback topics into <TROUPE_HOME>/data/lake; prints the run's report as JSON."""
    from pipelines.jobs.ingest import IngestConfig, IngestError, Ingestor

    if on_offset_reset not in ("fail", "restart"):
        raise typer.BadParameter(
            f"expected 'fail' or 'restart', got {on_offset_reset!r}", param_hint="--on-offset-reset"
        )
    cfg = IngestConfig.from_settings(
        get_settings(),
        mode="continuous" if continuous else "once",
        commit_rows=commit_rows,
        commit_interval_s=commit_interval_s,
        on_offset_reset=on_offset_reset,
        lock_wait_s=lock_wait,
    )
    ingestor = Ingestor(cfg)
    # Stop at the next poll and commit what was read (a kill -9 is safe too: it is just re-read).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: ingestor.stop())
    try:
        report = ingestor.run()
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        json.dumps(
            {
                "rows": report.rows,
                "dead_letters": report.dead_letters,
                "commits": report.commits,
                "rows_per_s": round(report.rows_per_s, 1),
                "lag": report.lag,
                "garbage_collected": report.garbage_collected,
                "resets": report.resets,
            }
        )
    )
