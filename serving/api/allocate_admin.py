"""Admin endpoints (X-API-Key) of allocate's revenue/cost multiplier λ (serving/allocate_balancer.py).

GET  /v1/allocate/lambda             λ in use, the controller that set it, last utilisation
PUT  /v1/allocate/lambda             set λ by hand (every worker and replica follows through the state store)
POST /v1/allocate/balancer/observe   last interval's utilisation / traffic / slot → the balancer's next λ
"""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.allocate_balancer import AllocateLambda, BalancerSettings
from serving.api.deps import AdminDep, ServiceDep
from serving.balancer import BalancerError, CurveLoadModel, LoadModel
from serving.errors import ModelNotLoadedError

router = APIRouter(prefix="/v1/allocate", tags=["admin"], dependencies=[AdminDep])
_MAX = BalancerSettings().lambda_max


class LambdaStatus(BaseModel):
    problem: str
    value: float = Field(description="λ the decisions use now")
    controller: str = Field(description="who set it last: mpc, feedback, admin or none")
    utilisation: float | None = Field(description="last reported utilisation (compute used / budget)")
    target_utilisation: float
    steps: int = Field(description="balancer intervals stepped so far")
    shared: bool = Field(description="true when λ lives in the state store (all workers and replicas)")


class LambdaUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = Field(ge=0.0, le=_MAX, description="the new λ")

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class BalancerReading(BaseModel):
    model_config = ConfigDict(extra="forbid")
    utilisation: float = Field(ge=0.0, le=10.0, description="last interval's compute used / budget")
    traffic: float = Field(ge=0.0, le=100.0, description="last interval's traffic / the day's mean traffic")
    slot: int = Field(ge=0, description="last interval's slot of the day (0 … slots_per_day − 1)")


def _controller(request: Request) -> AllocateLambda:
    ctl: AllocateLambda | None = getattr(request.app.state, "troupe_allocate", None)
    if ctl is None:
        raise HTTPException(503, "the service is starting; models and clients are not loaded yet")
    return ctl


def _load_model(service: ServiceDep) -> LoadModel | CurveLoadModel | None:
    try:
        model = service.models.get("allocate").extras.get("load_model")
    except ModelNotLoadedError:
        return None
    return model if isinstance(model, LoadModel | CurveLoadModel) else None


@router.get("/lambda", response_model=LambdaStatus)
async def get_lambda(request: Request) -> LambdaStatus:
    return LambdaStatus(**_controller(request).status())


@router.put("/lambda", response_model=LambdaStatus)
async def set_lambda(request: Request, body: LambdaUpdate) -> LambdaStatus:
    ctl = _controller(request)
    return LambdaStatus(**await asyncio.to_thread(ctl.set, body.value))


@router.post("/balancer/observe", response_model=LambdaStatus)
async def observe(request: Request, body: BalancerReading, service: ServiceDep) -> LambdaStatus:
    ctl = _controller(request)
    if body.slot >= ctl.cfg.slots_per_day:
        raise HTTPException(422, f"body.slot: must be < slots_per_day = {ctl.cfg.slots_per_day}, got {body.slot}")
    try:
        status = await asyncio.to_thread(ctl.observe, body.utilisation, body.traffic, body.slot, _load_model(service))
    except BalancerError as exc:
        raise HTTPException(422, f"body: {exc}") from None
    return LambdaStatus(**status)
