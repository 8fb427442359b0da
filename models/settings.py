"""Service-wide settings, read from the environment (prefix TROUPE_) by pydantic-settings.

Use `get_settings()` everywhere; tests override values with environment
variables and `get_settings.cache_clear()`, or build a `TroupeSettings(...)`
directly and pass it in.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TroupeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TROUPE_", extra="ignore")

    home: Path = Field(Path("var"), description="working folder for data, registry, spool, Airflow")
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("TROUPE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="an external Kafka cluster; unset means the embedded broker written to <home>/broker.json",
    )
    decisions_topic: str = "troupe.decisions.v1"
    feedback_topic: str = "troupe.feedback.v1"
    topic_partitions: int = Field(4, ge=1)
    log_level: str = "INFO"
    log_json: bool = False

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def broker_state_file(self) -> Path:
        return self.home / "broker.json"


@lru_cache
def get_settings() -> TroupeSettings:
    return TroupeSettings()


def bootstrap_servers(settings: TroupeSettings | None = None) -> str:
    """The Kafka bootstrap address: the external cluster if configured, else the embedded broker."""
    import json

    s = settings or get_settings()
    if s.kafka_bootstrap_servers:
        return s.kafka_bootstrap_servers
    state = s.broker_state_file
    if not state.exists():
        raise RuntimeError(
            f"no Kafka configured: set KAFKA_BOOTSTRAP_SERVERS, or start the embedded broker "
            f"with `troupe broker start` (it records its address in {state})"
        )
    return str(json.loads(state.read_text())["bootstrap_servers"])
