"""`troupe train rank --algo tscac|ma_cascade|bc|main_only|rcpo --data <dataset> | --sim`.

A thin wrapper over `training.train.main` (the same entry point `torchrun`
runs: `torchrun --nproc_per_node=2 -m training.train --algo tscac --sim`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("rank")
def rank(
    algo: str = typer.Option(..., "--algo", help="tscac, ma_cascade, bc, main_only or rcpo"),
    data: Path | None = typer.Option(None, "--data", help="Parquet transition dataset (file or folder)"),
    sim: bool = typer.Option(False, "--sim", help="train online in the rank simulator"),
    config: Path | None = typer.Option(None, "--config", help="YAML/TOML config (default configs/rank/<algo>.yaml)"),
    seed: int | None = typer.Option(None, "--seed"),
    iterations: int | None = typer.Option(None, "--iterations"),
    out_dir: Path | None = typer.Option(None, "--out-dir"),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda[:N]"),
    export: Path | None = typer.Option(None, "--export", help="folder for the parity-checked ONNX files"),
    registry: Path | None = typer.Option(None, "--registry", help="model-registry root to register into"),
    version: str | None = typer.Option(None, "--version", help="registry version name"),
) -> None:
    """Train a `rank` policy; prints the run summary as JSON."""
    from training.train import main as train_main

    if sim == (data is not None):
        raise typer.BadParameter("give exactly one of --sim or --data <dataset>")
    default_cfg = Path("configs/rank") / f"{algo}.yaml"
    cfg = config if config is not None else (default_cfg if default_cfg.is_file() else None)
    argv = ["--problem", "rank", "--algo", algo, *(["--sim"] if sim else ["--data", str(data)])]
    for flag, val in (
        ("--config", cfg),
        ("--seed", seed),
        ("--iterations", iterations),
        ("--out-dir", out_dir),
        ("--device", device),
        ("--export", export),
        ("--registry", registry),
        ("--version", version),
    ):
        if val is not None:
            argv += [flag, str(val)]
    summary = train_main(argv)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))
