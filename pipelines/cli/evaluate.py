"""`troupe evaluate --problem P --candidate V --baseline production`: off-policy evaluation of a candidate."""

from __future__ import annotations

from pathlib import Path

import typer

from models.settings import get_settings


def evaluate(
    problem: str = typer.Option(..., "--problem", help="rank, slot or allocate"),
    candidate: str = typer.Option(..., "--candidate", help="registry version of the candidate policy"),
    baseline: str = typer.Option("production", "--baseline", help="registry version, or 'production'"),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="transitions Parquet file/folder; default <data>/datasets/<problem>"
    ),
    output: Path | None = typer.Option(None, "--output", help="report folder; default <home>/reports/evaluate/..."),
    ci: str = typer.Option("normal", "--ci", help="'normal' (closed form) or 'bootstrap'"),
    confidence: float = typer.Option(0.95, "--confidence"),
    clip: float | None = typer.Option(None, "--clip", help="cap on importance weights (default: none)"),
    max_rows: int | None = typer.Option(None, "--max-rows", help="only the most recent N decisions"),
    no_sequential: bool = typer.Option(False, "--no-sequential", help="skip PDIS/WPDIS/sequential DR/FQE"),
) -> None:
    """Every estimator's value and CI for every signal, candidate − baseline, diagnostics → JSON, Markdown, PNG."""
    from pipelines.jobs.evaluate import EvaluateConfig, render_markdown, run_evaluate

    s = get_settings()
    cfg = EvaluateConfig(
        problem=problem,
        candidate=candidate,
        baseline=baseline,
        dataset=dataset or s.data_dir / "datasets" / problem,
        output_dir=output or s.home / "reports" / "evaluate" / f"{problem}-{candidate}-vs-{baseline}",
        registry_root=s.registry_dir,
        ci_method=ci,
        confidence=confidence,
        clip=clip,
        max_rows=max_rows,
        sequential=not no_sequential,
    )
    report = run_evaluate(cfg)
    typer.echo(render_markdown(report))
    typer.echo(f"written: {cfg.output_dir}/evaluation.{{json,md,png}}")
