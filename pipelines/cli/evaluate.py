"""`troupe evaluate`: off-policy evaluation — of a registered candidate on Troupe's own logs, or of any policy on any bandit logs.

    troupe evaluate --problem rank --candidate rcpo-… --baseline production
    troupe evaluate --logs logs.parquet --target action_dist [--reward-predictions q_hat] [--reward-model logistic]

The second form reads the common bandit-feedback layout (training/ope/logs.py):
columns context (or context_0, context_1, …), action, position (optional),
reward, pscore, the target's action distribution (column named by --target),
and optionally per-action reward predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from models.settings import get_settings


def evaluate(
    problem: str | None = typer.Option(None, "--problem", help="rank, slot or allocate (Troupe's own logs)"),
    candidate: str | None = typer.Option(None, "--candidate", help="registry version of the candidate policy"),
    baseline: str = typer.Option("production", "--baseline", help="registry version, or 'production'"),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="transitions Parquet file/folder; default <data>/datasets/<problem>"
    ),
    logs: Path | None = typer.Option(
        None, "--logs", help="bandit-feedback Parquet (context, action, position, reward, pscore, target distribution)"
    ),
    target: str = typer.Option(
        "action_dist", "--target", help="with --logs: column of the target's action distribution"
    ),
    reward_predictions: str | None = typer.Option(
        None, "--reward-predictions", help="with --logs: column of per-action reward predictions (else one is fitted)"
    ),
    reward_model: str = typer.Option(
        "logistic", "--reward-model", help="with --logs: logistic, gradient_boosting, ridge or package.module:Class"
    ),
    estimators: str = typer.Option(
        "ips,snips,dm,dr,sndr,dr_os", "--estimators", help="with --logs: comma-separated estimator names"
    ),
    shrinkage_lambda: float | None = typer.Option(
        None, "--shrinkage-lambda", help="with --logs: λ of DR with shrinkage (default: tuned by estimated MSE)"
    ),
    output: Path | None = typer.Option(None, "--output", help="report folder; default <home>/reports/evaluate/..."),
    ci: str | None = typer.Option(
        None, "--ci", help="'normal' (closed form) or 'bootstrap' (default: normal; bootstrap with --logs)"
    ),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", help="bootstrap resamples"),
    confidence: float = typer.Option(0.95, "--confidence"),
    clip: float | None = typer.Option(None, "--clip", help="cap on importance weights (default: none)"),
    max_rows: int | None = typer.Option(None, "--max-rows", help="only the most recent N decisions"),
    no_sequential: bool = typer.Option(False, "--no-sequential", help="skip PDIS/WPDIS/sequential DR/FQE"),
) -> None:
    """Every estimator's value and CI: candidate − baseline on Troupe's logs, or the target's value on --logs."""
    if logs is not None:
        if problem or candidate:
            raise typer.BadParameter("--logs evaluates a target distribution from the file; drop --problem/--candidate")
        _evaluate_logs(logs, target, reward_predictions, reward_model, estimators, shrinkage_lambda,
                       ci or "bootstrap", n_bootstrap, confidence, output)  # fmt: skip
        return
    if problem is None or candidate is None:
        raise typer.BadParameter("give --problem and --candidate (Troupe's own logs), or --logs FILE --target COLUMN")
    from pipelines.jobs.evaluate import EvaluateConfig, render_markdown, run_evaluate

    s = get_settings()
    cfg = EvaluateConfig(
        problem=problem,
        candidate=candidate,
        baseline=baseline,
        dataset=dataset or s.data_dir / "datasets" / problem,
        output_dir=output or s.home / "reports" / "evaluate" / f"{problem}-{candidate}-vs-{baseline}",
        registry_root=s.registry_dir,
        ci_method=ci or "normal",
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        clip=clip,
        max_rows=max_rows,
        sequential=not no_sequential,
    )
    report = run_evaluate(cfg)
    typer.echo(render_markdown(report))
    typer.echo(f"written: {cfg.output_dir}/evaluation.{{json,md,png}}")


def _evaluate_logs(
    logs: Path,
    target: str,
    reward_predictions: str | None,
    reward_model: str,
    estimators: str,
    shrinkage_lambda: float | None,
    ci: str,
    n_bootstrap: int,
    confidence: float,
    output: Path | None,
) -> None:
    from training.ope import CIOptions, evaluate_logs, read_bandit_feedback

    feedback = read_bandit_feedback(logs, target=target, reward_predictions=reward_predictions)
    names = tuple(e.strip() for e in estimators.split(",") if e.strip())
    results = evaluate_logs(
        feedback,
        estimators=names,
        reward_model=reward_model,
        shrinkage_lambda=shrinkage_lambda,
        ci=CIOptions(ci, confidence, n_bootstrap),  # type: ignore[arg-type]
    )
    lines = [
        f"# Off-policy estimates of `{target}` on {logs.name}",
        "",
        f"{feedback.n_rounds} rounds, {feedback.n_actions} actions, {feedback.len_list} position(s); "
        f"reward predictions: {reward_predictions or f'{reward_model}, cross-fitted (3 folds)'}; "
        f"{int(confidence * 100)}% CI: {ci}" + (f" ({n_bootstrap} resamples)" if ci == "bootstrap" else ""),
        "",
        "| estimator | value | CI low | CI high |",
        "|---|---:|---:|---:|",
    ]
    for name, est in results.items():
        lines.append(f"| {name} | {est.value[0]:.6g} | {est.ci_low[0]:.6g} | {est.ci_high[0]:.6g} |")
    diagnostics = next((e.diagnostics for e in results.values() if e.diagnostics is not None), None)
    if diagnostics is not None:
        lines += ["", f"Importance weights: effective sample size {diagnostics.effective_sample_size:.0f} "
                      f"of {diagnostics.n_used}, max weight {diagnostics.weight_max:.3g}."]  # fmt: skip
    for est in results.values():
        lines += [f"- {est.estimator}: {w}" for w in est.warnings]
    markdown = "\n".join(lines) + "\n"
    typer.echo(markdown)
    out = output or get_settings().home / "reports" / "evaluate" / f"logs-{logs.stem}-{target}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.md").write_text(markdown)
    (out / "evaluation.json").write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))
    typer.echo(f"written: {out}/evaluation.{{json,md}}")
