"""`troupe registry list|show|promote|rollback|verify`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from models.registry import ModelRegistry
from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _registry() -> ModelRegistry:
    return ModelRegistry(get_settings().registry_dir)


@app.command("list")
def list_cmd(problem: str = typer.Argument(..., help="rank, slot or allocate")) -> None:
    """Every registered version of PROBLEM, oldest first; * marks the promoted one."""
    reg = _registry()
    current = reg.current_version(problem)
    table = Table("", "version", "algorithm", "created_at", "metrics")
    for m in reg.list(problem):
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.metrics.items())[:4])
        table.add_row("*" if m.version == current else "", m.version, m.algorithm, m.created_at.isoformat(), metrics)
    Console().print(table)


@app.command()
def show(problem: str, version: str = typer.Argument(None, help="Defaults to the promoted version.")) -> None:
    """Print a version's manifest after verifying every file's sha256."""
    reg = _registry()
    loaded = reg.load(problem, version) if version else reg.current(problem)
    typer.echo(loaded.manifest.model_dump_json(indent=2))


@app.command()
def promote(problem: str, version: str) -> None:
    """Make VERSION the one serving uses for PROBLEM."""
    _registry().promote(problem, version)
    typer.echo(f"{problem}: promoted {version}")


@app.command()
def rollback(problem: str) -> None:
    """Return PROBLEM to the version promoted before the current one."""
    typer.echo(f"{problem}: rolled back to {_registry().rollback(problem)}")
