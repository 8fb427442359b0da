"""`troupe train`: any Gymnasium env from a config file, or a Troupe problem (rank | slot | allocate).

    troupe train --env package.module:EnvClass --config my_env.yaml [--algo rcpo] [--no-plots]
    troupe train rank --algo tscac --sim | --data <dataset>
    troupe train slot --algo main_only --sim

A thin wrapper over `training.train.main` (the same entry point `torchrun` runs:
`torchrun --nproc_per_node=2 -m training.train --algo tscac --sim`). Outputs go under
$TROUPE_HOME/runs/<task>/<algorithm> unless the config's `run.out_dir` or `--out-dir` says otherwise;
docs/training.md lists the config sections and the files written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(invoke_without_command=True)

PROBLEMS = ("rank", "slot", "allocate")


def _run(argv: list[str]) -> None:
    from training.train import main as train_main

    try:
        summary = train_main(argv)
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))


def _common_flags(**values: Any) -> list[str]:
    argv: list[str] = []
    for flag, val in values.items():
        if val is None or val is False:
            continue
        name = "--" + flag.replace("_", "-")
        argv += [name] if val is True else [name, str(val)]
    return argv


@app.callback()
def train_env(
    ctx: typer.Context,
    env: str | None = typer.Option(
        None, "--env", help="package.module:EnvClass (a Gymnasium env, vector-reward convention)"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/TOML config: algorithm, run, algo, online, env, task"
    ),
    algo: str | None = typer.Option(None, "--algo", help="registered algorithm (overrides the config's `algorithm`)"),
    seed: int | None = typer.Option(None, "--seed"),
    iterations: int | None = typer.Option(None, "--iterations"),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="default $TROUPE_HOME/runs/<task>/<algorithm>"),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda[:N]"),
    no_plots: bool = typer.Option(False, "--no-plots", help="skip curves.png"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Train a policy: `--env … --config …` for any environment, or a subcommand for a Troupe problem."""
    if ctx.invoked_subcommand is not None:
        return
    if env is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    argv = ["--env", env] + _common_flags(
        config=config,
        algo=algo,
        seed=seed,
        iterations=iterations,
        out_dir=out_dir,
        device=device,
        no_plots=no_plots,
        no_progress=no_progress,
    )
    _run(argv)


def _problem_command(problem: str) -> None:
    def command(
        algo: str = typer.Option(
            ..., "--algo", help="registered algorithm (tscac, rcpo, main_only, bc, ma_cascade, …)"
        ),
        data: Path | None = typer.Option(None, "--data", help="Parquet transition dataset (file or folder)"),
        sim: bool = typer.Option(False, "--sim", help=f"train online in the {problem} simulator"),
        config: Path | None = typer.Option(
            None, "--config", help=f"YAML/TOML config (default configs/{problem}/<algo>.yaml)"
        ),
        seed: int | None = typer.Option(None, "--seed"),
        iterations: int | None = typer.Option(None, "--iterations"),
        out_dir: Path | None = typer.Option(None, "--out-dir", help=f"default $TROUPE_HOME/runs/{problem}/<algorithm>"),
        device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda[:N]"),
        export: Path | None = typer.Option(None, "--export", help="folder for the parity-checked ONNX files"),
        registry: Path | None = typer.Option(None, "--registry", help="model-registry root to register into"),
        version: str | None = typer.Option(None, "--version", help="registry version name"),
        no_plots: bool = typer.Option(False, "--no-plots", help="skip curves.png"),
        no_progress: bool = typer.Option(False, "--no-progress"),
    ) -> None:
        if sim == (data is not None):
            raise typer.BadParameter("give exactly one of --sim or --data <dataset>")
        default_cfg = Path("configs") / problem / f"{algo}.yaml"
        cfg = config if config is not None else (default_cfg if default_cfg.is_file() else None)
        argv = ["--problem", problem, "--algo", algo, *(["--sim"] if sim else ["--data", str(data)])]
        argv += _common_flags(
            config=cfg,
            seed=seed,
            iterations=iterations,
            out_dir=out_dir,
            device=device,
            export=export,
            registry=registry,
            version=version,
            no_plots=no_plots,
            no_progress=no_progress,
        )
        _run(argv)

    command.__doc__ = (
        f"Train a `{problem}` policy in its simulator (--sim) or from logs (--data); prints the summary as JSON."
    )
    app.command(problem)(command)


for _problem in PROBLEMS:
    _problem_command(_problem)
