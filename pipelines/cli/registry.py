"""`troupe registry list|show|register|promote|rollback`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

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
def register(
    problem: str = typer.Argument(..., help="rank, slot or allocate"),
    model: Path = typer.Argument(..., help="the policy's ONNX file (becomes model.onnx)"),
    version: str = typer.Option(..., "--version", help="new version name: letters, digits, '.', '_' or '-'"),
    algorithm: str = typer.Option("external", "--algorithm", help="what produced the policy, kept in the manifest"),
    agent: list[str] = typer.Option(
        [], "--agent", metavar="NAME=FILE", help="multi-agent policies: one .onnx file per agent (repeatable)"
    ),
    promote_it: bool = typer.Option(False, "--promote", help="also make it the version serving uses"),
) -> None:
    """Register an ONNX policy as a new VERSION of PROBLEM (tensor specs read from the file; not promoted unless --promote)."""
    from models.errors import RegistryError
    from models.problems import get_problem
    from models.registry import MODEL_FILE, ArtifactManifest
    from pipelines.jobs.register import onnx_tensor_specs

    spec = get_problem(problem)
    files: dict[str, Path] = {MODEL_FILE: model}
    agents: dict[str, str] = {}
    for item in agent:
        agent_name, sep, agent_file = item.partition("=")
        if not sep or not agent_name or not agent_file:
            raise typer.BadParameter(f"--agent: expected NAME=FILE.onnx, got {item!r}")
        files[f"{agent_name}.onnx"] = Path(agent_file)
        agents[agent_name] = f"{agent_name}.onnx"
    for file_name, source in files.items():
        if not source.is_file():
            raise RegistryError(f"{source} ({file_name}) is not a file")
    inputs, outputs = onnx_tensor_specs(model)
    manifest = ArtifactManifest(
        name=f"{problem}-{algorithm}",
        version=version,
        problem=problem,
        algorithm=algorithm,
        created_at=dt.datetime.now(dt.UTC),
        inputs=inputs,
        outputs=outputs,
        feature_service=spec.feature_service,
        agents=agents,
    )
    registry = _registry()
    loaded = registry.register(manifest, {k: str(v) for k, v in files.items()})
    typer.echo(f"{problem}: registered {version} at {loaded.path}")
    if promote_it:
        registry.promote(problem, version)
        typer.echo(f"{problem}: promoted {version}")


@app.command()
def promote(problem: str, version: str) -> None:
    """Make VERSION the one serving uses for PROBLEM."""
    _registry().promote(problem, version)
    typer.echo(f"{problem}: promoted {version}")


@app.command()
def rollback(problem: str) -> None:
    """Return PROBLEM to the version promoted before the current one."""
    typer.echo(f"{problem}: rolled back to {_registry().rollback(problem)}")
