"""`troupe broker start|stop|status`: the embedded Tansu broker, detached, tracked in <home>/broker.json."""

from __future__ import annotations

import json

import typer

from infra.broker import start_detached, status, stop_detached
from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command()
def start(port: int = typer.Option(0, help="Loopback port; 0 picks a free one.")) -> None:
    """Start the broker on loopback and create the decision and feedback topics."""
    s = get_settings()
    if s.kafka_bootstrap_servers:
        typer.echo(f"KAFKA_BOOTSTRAP_SERVERS is set ({s.kafka_bootstrap_servers}); not starting an embedded broker")
        raise typer.Exit(0)
    topics = {s.decisions_topic: s.topic_partitions, s.feedback_topic: s.topic_partitions}
    state = start_detached(s.broker_state_file, topics, port)
    typer.echo(json.dumps(state))


@app.command()
def stop() -> None:
    """Stop the embedded broker (its in-memory topics are lost)."""
    was_running = stop_detached(get_settings().broker_state_file)
    typer.echo("stopped" if was_running else "not running")


@app.command("status")
def status_cmd() -> None:
    """Print whether the broker runs, its pid and its address; exit 1 when it does not run."""
    state = status(get_settings().broker_state_file)
    typer.echo(json.dumps(state))
    raise typer.Exit(0 if state.get("running") else 1)
