"""`troupe triton export-repo|start`: a Triton model repository from the registry, and a local server."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from models.registry import ModelRegistry
from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("export-repo")
def export_repo(
    out: Path = typer.Argument(..., help="Folder of the model repository (created or updated)."),
    problem: list[str] = typer.Option(["rank", "slot", "allocate"], "--problem", "-p", help="Problems to export."),
    variant: str = typer.Option(
        "gpu", help="gpu: onnxruntime_onnx on KIND_GPU (production); cpu: python backend (tests)."
    ),
    max_batch_size: int = typer.Option(256, min=1),
    max_queue_delay_us: int = typer.Option(100, min=0),
    instances: int = typer.Option(1, min=1),
) -> None:
    """Write config.pbtxt + 1/model.onnx for every registered version (sha256-verified) of each problem."""
    from serving.triton_repository import RepositoryOptions, export_repository

    options = RepositoryOptions(variant, max_batch_size, max_queue_delay_us, instances)  # type: ignore[arg-type]
    names = export_repository(ModelRegistry(get_settings().registry_dir), out, problem, options)
    for name in names:
        typer.echo(f"{out / name}")
    typer.echo(f"{len(names)} models written ({variant})")


@app.command()
def start(
    repository: Path = typer.Argument(..., help="Model repository (export-repo --variant cpu on CPU hosts)."),
    http_port: int = typer.Option(8000),
    grpc_port: int = typer.Option(8001),
    metrics_port: int = typer.Option(8002),
) -> None:
    """Run the nvidia-pytriton tritonserver on loopback until Ctrl-C (needs `make install-triton`)."""
    from infra.triton.server import TritonServer

    work = get_settings().home / "triton"
    server = TritonServer(repository, work, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with server:
        typer.echo(f"Triton ready: HTTP {server.http_url}, gRPC {server.grpc_url} (log {server.log_path})")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
