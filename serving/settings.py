"""Settings of the decision API, read from the environment (prefix TROUPE_) by pydantic-settings.

`ServingSettings` extends the service-wide `TroupeSettings` (home, Kafka,
topics) with what only the API needs. Use `get_settings()` as a FastAPI
dependency; tests build a `ServingSettings(...)` and hand it to `create_app`,
or override the dependency.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from models.problems import problem_names
from models.settings import TroupeSettings

BackendKind = Literal["onnxruntime", "triton_http", "triton_grpc"]


class ServingSettings(TroupeSettings):
    """Everything `serving/` reads from the environment; every field has a TROUPE_ variable."""

    problems: Annotated[list[str], NoDecode] = Field(
        default_factory=problem_names, description="problems this instance serves (comma-separated in the env)"
    )
    backend: BackendKind = Field("onnxruntime", description="where inference runs: in-process or Triton")
    triton_url: str = Field("127.0.0.1:8000", description="host:port of Triton's HTTP (or gRPC) endpoint")
    ort_intra_op_threads: int = Field(1, ge=1, description="onnxruntime threads inside one operator")
    ort_inter_op_threads: int = Field(1, ge=1, description="onnxruntime threads across operators")
    ort_cuda: Literal["auto", "never"] = Field(
        "auto", description="auto: use the CUDA provider when onnxruntime lists it and a GPU device exists"
    )
    inference_deadline_ms: float = Field(
        50.0, gt=0, description="per-request budget for inference; past it the default policy answers"
    )
    breaker_failures: int = Field(5, ge=1, description="consecutive inference failures that open the breaker")
    breaker_reset_s: float = Field(2.0, gt=0, description="seconds an open breaker waits before one trial call")
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="keys accepted by the admin endpoints; none configured = admin disabled"
    )
    decide_api_key: SecretStr | None = Field(None, description="when set, decide and feedback require this key")
    experiments_file: Path | None = Field(None, description="YAML file of experiments loaded at start-up")
    registry_watch_s: float = Field(
        2.0, ge=0, description="seconds between registry polls for a new promoted version; 0 disables the watch"
    )
    feast_repo: Path | None = Field(None, description="Feast repo folder (feature_store.yaml); unset = defaults only")
    feature_cache_ttl_s: float = Field(
        30.0, ge=0, description="seconds an online-feature read is reused; user aggregates change hourly at most"
    )
    feature_cache_size: int = Field(100_000, ge=0, description="users kept in the online-feature cache")
    feature_cache_max_stale_s: float = Field(
        300.0,
        ge=0,
        description="seconds past its TTL a cached read is still served while a background read refreshes it",
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="request bodies over this size get 413")
    max_candidates: int = Field(2000, ge=1, description="most candidates one rank request may carry")
    exploration_temperature: float = Field(
        1.0, ge=0, description="softmax temperature outside experiments (slot, allocate); 0 = argmax"
    )
    exploration_epsilon: float = Field(0.05, ge=0, le=1, description="ε-greedy mixing outside experiments")
    exploration_std_scale: float = Field(
        1.0, ge=0, description="scale of the rank policy's σ outside experiments; 0 = deterministic weights"
    )
    exploration_seed: int | None = Field(None, description="seed of the exploration RNG (tests); unset = OS entropy")
    decision_log_batch_ms: float = Field(
        5.0, ge=0, description="events are handed to the producer in bursts this often; 0 = one by one"
    )
    state_store_url: str | None = Field(
        None,
        description="Redis URL of the state shared by workers and replicas (experiments, MPC λ, sessions), "
        "e.g. redis://127.0.0.1:6379/0; required when workers > 1; unset = in-process state (one worker)",
    )
    state_store_prefix: str = Field(
        "troupe", description="key prefix in that Redis (one per deployment; tests use a unique one)"
    )
    producer_request_timeout_ms: int = Field(5_000, ge=1, description="Kafka produce request timeout")
    producer_delivery_timeout_ms: int = Field(
        10_000, ge=1, description="how long an event may wait for Kafka before the producer falls back to the spool"
    )
    producer_retry_interval_s: float = Field(1.0, gt=0, description="how often the spool is replayed in an outage")
    decision_log_wait_fsync: bool = Field(
        False,
        description="answer a decision only once its event's group is fdatasynced (power-loss safe; throughput then "
        "capped near concurrency / fdatasync latency); default: written to the spool before the answer (kill -9 "
        "safe) and fdatasynced by group commit within a few ms",
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1)

    @field_validator("problems", mode="before")
    @classmethod
    def _split_problems(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("problems")
    @classmethod
    def _known_problems(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(problem_names()))
        if unknown:
            raise ValueError(f"unknown problems {unknown}; known: {problem_names()}")
        return v

    @field_validator("admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v


@lru_cache
def get_settings() -> ServingSettings:
    return ServingSettings()
