"""/healthz (process alive), /readyz (models, features, producer), /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.api.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, problem: str | None = None) -> Response:
    """200 when every configured problem (TROUPE_PROBLEMS) has a loaded policy, the feature store answers
    and the producer is healthy; `?problem=slot` asks about that problem only (a load balancer per problem).
    """
    models = state.service.models.ready()
    if problem is not None and problem not in models:
        raise HTTPException(404, f"problem {problem!r} is not served here; TROUPE_PROBLEMS is {sorted(models)}")
    features = await asyncio.to_thread(state.service.features.reachable)
    producer = bool(state.producer.healthy())
    needed = [models[problem]] if problem is not None else list(models.values())
    ready = all(needed) and features and producer
    body = {"ready": ready, "models": models, "features": features, "producer": producer}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    return Response(state.service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
