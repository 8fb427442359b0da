"""Builds the decision API: `create_app(settings)`; models and clients are loaded in the lifespan.

Run it with `troupe serve` (uvicorn, `--workers N`), or `uvicorn --factory
serving.app:create_app`. Tests pass their own settings, producer or feature
reader to `create_app`, and may swap any dependency with
`app.dependency_overrides`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from models.logging import log_event
from models.registry import ModelRegistry
from serving.allocate_balancer import AllocateLambda
from serving.api import admin, allocate_admin, decide, health
from serving.api.body import add_body_schemas
from serving.api.deps import AppState
from serving.api.fast_decide import FastDecide
from serving.decision_log import DecisionLogger, EventProducer
from serving.errors import BadRequestError
from serving.experiments import ExperimentStore, ExposureLogHook, HookSet
from serving.exploration import ExplorationConfig
from serving.features import FeastFeatureReader, FeatureReader, OnlineFeatures
from serving.json_guard import JsonGuard, add_error_shape
from serving.lifecycle import BackendFactory, ModelManager, default_backend_factory
from serving.metrics import RequestCounter, ServingMetrics
from serving.middleware import BodySizeLimit
from serving.openapi_doc import add_openapi_details
from serving.rank_messages import SessionMessages
from serving.service import DecisionService
from serving.settings import ServingSettings, get_settings
from serving.state_store import open_state_store

log = logging.getLogger("troupe.serving")
_NO_READER: Any = object()


def _validation_body(errors: list[Any]) -> dict[str, Any]:
    # The rejected input is not echoed: it may hold NaN (not JSON) or a large payload.
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return {"message": message, "detail": detail}


def _make_producer(settings: ServingSettings) -> EventProducer:
    from serving.producer import EventProducer as KafkaEventProducer
    from serving.producer import ProducerConfig

    return KafkaEventProducer(
        ProducerConfig.from_settings(
            settings,
            request_timeout_ms=settings.producer_request_timeout_ms,
            delivery_timeout_ms=settings.producer_delivery_timeout_ms,
            retry_interval_s=settings.producer_retry_interval_s,
        )
    ).start()


def create_app(
    settings: ServingSettings | None = None,
    *,
    producer: EventProducer | None = None,
    feature_reader: FeatureReader | None = _NO_READER,
    backend_factory: BackendFactory | None = None,
    experiments: ExperimentStore | None = None,
) -> FastAPI:
    """The decision API. Anything not passed is built from `settings` when the app starts."""
    s = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = ServingMetrics()
        own_producer = producer is None
        prod = producer if producer is not None else _make_producer(s)
        reader: FeatureReader | None
        if feature_reader is _NO_READER:
            reader = FeastFeatureReader(s.feast_repo) if s.feast_repo is not None else None
        else:
            reader = feature_reader
        models = ModelManager(
            ModelRegistry(s.registry_dir),
            list(s.problems),
            backend_factory or default_backend_factory(s),
            on_swap=lambda problem, _v: metrics.count(metrics.model_swaps, problem),
        )
        store = experiments
        if store is None:
            store = ExperimentStore.from_yaml(s.experiments_file) if s.experiments_file else ExperimentStore()
        state = open_state_store(s)
        if state is not None:
            store.attach(state)  # the YAML seeds Redis; every worker follows Redis
        service = DecisionService(
            settings=s,
            models=models,
            features=OnlineFeatures(
                reader,
                ttl_s=s.feature_cache_ttl_s,
                max_entries=s.feature_cache_size,
                max_stale_s=s.feature_cache_max_stale_s,
                on_default=lambda problem, feature: metrics.count(metrics.feature_defaults, problem, feature),
                on_read_error=lambda service: metrics.count(metrics.feature_read_errors, service),
            ),
            experiments=store,
            hooks=HookSet([ExposureLogHook()], on_error=lambda hook: metrics.count(metrics.hook_errors, hook)),
            logger=DecisionLogger(
                prod,
                s.decisions_topic,
                s.feedback_topic,
                on_error=lambda topic: metrics.count(metrics.log_errors, topic),
                batch_interval_s=s.decision_log_batch_ms / 1000.0,
                wait_fsync=s.decision_log_wait_fsync,
            ),
            metrics=metrics,
            rng=np.random.default_rng(s.exploration_seed),
            messages=SessionMessages(state),
            default_exploration=ExplorationConfig(
                temperature=s.exploration_temperature, epsilon=s.exploration_epsilon, std_scale=s.exploration_std_scale
            ),
        )
        allocate_lambda = AllocateLambda(state)
        service.allocate_lambda = allocate_lambda.current
        app.state.troupe_allocate = allocate_lambda
        metrics.add_callback(
            lambda: _live_gauges(service, prod, allocate_lambda),
            {
                "troupe_producer_events": ["outcome"],
                "troupe_breaker_open": ["problem"],
                "troupe_model_loaded": ["problem"],
            },
        )
        try:
            await models.load_current()
            for exp in store.all():
                if exp.status == "running":
                    for version in store.versions(exp.problem):
                        if version != "current":
                            await models.ensure_loaded(exp.problem, version)
            await service.warm_up()
            service.logger.start()
            models.start_watch(s.registry_watch_s)
            # Everything alive now (modules, Feast, onnxruntime, the loaded models: ~350k
            # objects) lives as long as the process. A full collection scans them all and
            # stalled every request for ~200 ms (measured), periodically under load — the
            # p99 spikes of the benchmark. gc.freeze() moves them to a generation the
            # collector never scans; objects created from here on are collected as usual.
            # Once per process: a process that builds many apps (tests) would otherwise
            # freeze each one's garbage too.
            if gc.get_freeze_count() == 0:
                gc.collect()
                gc.freeze()
            app.state.troupe = AppState(settings=s, service=service, producer=prod, state_store=state)
            versions = {p: models.current_version(p) or "default" for p in s.problems}
            log_event(log, "serving.started", backend=s.backend, versions=versions)
            yield
        finally:
            app.state.troupe = None
            metrics.close()
            await service.logger.close()
            await models.close()
            await service.messages.close()
            if own_producer:
                prod.close()
            if state is not None:
                state.close()

    # Swagger UI and ReDoc from the fastapi-offline wheel's own copies under /static-offline-docs, not a CDN:
    # /docs works on a machine without internet access.
    app = FastAPIOffline(
        title="Troupe decision API",
        version="1",
        description="Learned decisions for a ranking stack: fusion weights (rank), live-stream slot (slot) and "
        "computation allocation (allocate), each logged with its propensity for off-policy evaluation.",
        lifespan=lifespan,
    )
    app.state.settings = s
    add_body_schemas(app, decide.BODY_MODELS)
    app.include_router(decide.router)
    app.include_router(admin.router)
    app.include_router(allocate_admin.router)
    app.include_router(health.router)
    # Starlette tries routes in order and FastAPI puts its docs routes first: the decide
    # routes, nearly all the traffic, go to the front (each miss is a regex match and
    # a scope copy). No two routes share a path, so the order changes no answer.
    decide_first = sorted(app.router.routes, key=lambda r: not getattr(r, "path", "").startswith("/v1/decide/"))
    app.router.routes[:] = decide_first
    # The last added runs first: BodySizeLimit, JsonGuard, then FastDecide (decide requests, without routing).
    app.add_middleware(FastDecide)
    app.add_middleware(JsonGuard, decide_paths=frozenset(decide.DECIDE_ROUTES))  # 415, and 422 when too deep
    app.add_middleware(BodySizeLimit, max_bytes=s.max_body_bytes)
    app.add_middleware(RequestCounter, fixed_paths=frozenset(decide.DECIDE_ROUTES))  # outermost: counts every answer
    add_error_shape(app)
    add_openapi_details(app)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(list(exc.errors())), status_code=422)

    @app.exception_handler(BadRequestError)
    async def _on_bad_request(_: Request, exc: BadRequestError) -> JSONResponse:
        loc = exc.field.split(".")
        return JSONResponse(
            {"message": str(exc), "detail": [{"loc": loc, "msg": exc.reason, "type": "value_error"}]}, status_code=422
        )

    return app


def _live_gauges(
    service: DecisionService, producer: EventProducer, allocate_lambda: AllocateLambda | None = None
) -> dict[str, dict[tuple[str, ...], float]]:
    out: dict[str, dict[tuple[str, ...], float]] = {
        "troupe_spool_size": {(): float(producer.spool_size())},
        "troupe_breaker_open": {(p,): float(b.state != "closed") for p, b in service.breakers.items()},
        "troupe_model_loaded": {(p,): float(ok) for p, ok in service.models.ready().items()},
    }
    if allocate_lambda is not None and "allocate" in service.models.problems:
        out["troupe_allocate_lambda"] = {(): allocate_lambda.current()}
        utilisation = allocate_lambda.state().get("utilisation")
        if utilisation is not None:
            out["troupe_allocate_utilisation"] = {(): float(utilisation)}
    counters = getattr(producer, "counters", None)
    if callable(counters):
        out["troupe_producer_events"] = {(k,): float(v) for k, v in counters().items()}
    return out
