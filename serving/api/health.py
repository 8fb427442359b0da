"""/healthz (process alive), /readyz (models, features, producer), /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from serving.api.deps import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> Response:
    """200 when every served problem has a loaded policy, the feature store answers and the producer is healthy."""
    models = state.service.models.ready()
    features = await asyncio.to_thread(state.service.features.reachable)
    producer = bool(state.producer.healthy())
    ready = all(models.values()) and features and producer
    body = {"ready": ready, "models": models, "features": features, "producer": producer}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: StateDep) -> Response:
    return Response(state.service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
