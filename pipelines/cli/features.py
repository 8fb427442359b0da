"""`troupe features apply|materialize`: the Feast repo under <TROUPE_HOME>/feature_repo (pipelines/jobs/features.py)."""

from __future__ import annotations

import json

import typer

from models.settings import get_settings

app = typer.Typer(no_args_is_help=True)

_STORE = typer.Option(
    "sqlite", "--online-store", envvar="TROUPE_FEAST_ONLINE_STORE", help="'sqlite' (default) or 'redis'."
)
_REDIS = typer.Option("127.0.0.1:6379", "--redis", envvar="TROUPE_FEAST_REDIS", help="Redis connection string.")


def _config(online_store: str, redis: str):  # type: ignore[no-untyped-def]
    from pipelines.jobs.features import FeaturesConfig

    if online_store not in ("sqlite", "redis"):
        raise typer.BadParameter(f"expected 'sqlite' or 'redis', got {online_store!r}", param_hint="--online-store")
    return FeaturesConfig.from_settings(get_settings(), online_store=online_store, redis_connection_string=redis)


@app.command("apply")
def apply_cmd(online_store: str = _STORE, redis: str = _REDIS) -> None:
    """Render feature_store.yaml into the runtime repo and `feast apply` the declarations in feature_store/."""
    from pipelines.jobs.features import apply

    cfg = _config(online_store, redis)
    apply(cfg)
    typer.echo(json.dumps({"repo": str(cfg.repo_dir), "online_store": cfg.online_store}))


@app.command()
def materialize(online_store: str = _STORE, redis: str = _REDIS) -> None:
    """Recompute the offline sources from the lake and materialize incrementally up to now."""
    from pipelines.jobs.features import materialize as run

    rows = run(_config(online_store, redis))
    typer.echo(json.dumps({"rows": rows}))
