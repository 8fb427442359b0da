"""`troupe serve`: run the decision API under uvicorn."""

from __future__ import annotations

import os
import shutil

import typer

app = typer.Typer(invoke_without_command=True, help="Run the decision API (uvicorn).")


@app.callback()
def serve(
    host: str = typer.Option(None, help="Address to bind; default TROUPE_HOST (127.0.0.1)."),
    port: int = typer.Option(None, help="Port; default TROUPE_PORT (8080)."),
    workers: int = typer.Option(None, min=1, help="uvicorn worker processes; default TROUPE_WORKERS (1)."),
    backend: str = typer.Option(None, help="onnxruntime, triton_http or triton_grpc; default TROUPE_BACKEND."),
    triton_url: str = typer.Option(None, help="host:port of Triton (HTTP or gRPC, matching --backend)."),
    log_level: str = typer.Option("warning", help="uvicorn's access/error log level."),
) -> None:
    """Serve POST /v1/decide/{rank,slot,allocate}, /v1/feedback, admin, /healthz, /readyz, /metrics."""
    import uvicorn

    # Each worker builds its app from the environment (create_app reads get_settings()),
    # so command-line choices travel to the workers as TROUPE_ variables.
    if backend is not None:
        os.environ["TROUPE_BACKEND"] = backend
    if triton_url is not None:
        os.environ["TROUPE_TRITON_URL"] = triton_url
    if workers is not None:
        os.environ["TROUPE_WORKERS"] = str(workers)  # the app checks shared state is configured for N > 1
    from serving.settings import get_settings

    get_settings.cache_clear()
    s = get_settings()
    if (workers or s.workers) > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics for all workers (serving/metrics.py): prometheus_client's multiprocess
        # mode, in a folder emptied at each start (files of an earlier run would be summed in).
        folder = s.home / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from serving.http_protocol import PROTOCOL

    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        http=PROTOCOL,  # httptools, one send(2) per response (serving/http_protocol.py)
        host=host or s.host,
        port=port or s.port,
        workers=workers or s.workers,
        log_level=log_level,
        access_log=False,
    )
