"""POST /v1/decide/{problem} (one route per problem, so each has its own typed schema) and POST /v1/feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel
from pydantic_core import to_json

from models.events import FeedbackEvent
from serving.api.body import body_doc, json_body
from serving.api.deps import DecideServiceDep
from serving.schemas import (
    AllocateRequest,
    AllocateResponse,
    FeedbackAccepted,
    RankRequest,
    RankResponse,
    SlotRequest,
    SlotResponse,
)
from serving.service import Outcome


def _json(outcome: Outcome) -> Response:
    # The response is built by our code from validated parts: serialising it
    # directly skips FastAPI's re-validation against response_model (which still
    # documents it in OpenAPI) — a large share of the per-request cost.
    return Response(to_json(outcome.response_fields()), media_type="application/json")


router = APIRouter(prefix="/v1", tags=["decide"])


BODY_MODELS: list[type[BaseModel]] = [RankRequest, SlotRequest, AllocateRequest]


@router.post(
    "/decide/rank",
    response_model=RankResponse,
    summary="Fusion weights per cascade stage and the final ordering",
    openapi_extra=body_doc(RankRequest),
)
async def decide_rank(
    body: Annotated[RankRequest, Depends(json_body(RankRequest))], service: DecideServiceDep
) -> Response:
    return _json(await service.decide("rank", body))


@router.post(
    "/decide/slot",
    response_model=SlotResponse,
    summary="Insert one live stream into the page, and where",
    openapi_extra=body_doc(SlotRequest),
)
async def decide_slot(
    body: Annotated[SlotRequest, Depends(json_body(SlotRequest))], service: DecideServiceDep
) -> Response:
    return _json(await service.decide("slot", body))


@router.post(
    "/decide/allocate",
    response_model=AllocateResponse,
    summary="Computation per cascade stage for one request",
    openapi_extra=body_doc(AllocateRequest),
)
async def decide_allocate(
    body: Annotated[AllocateRequest, Depends(json_body(AllocateRequest))], service: DecideServiceDep
) -> Response:
    return _json(await service.decide("allocate", body))


@router.post("/feedback", response_model=FeedbackAccepted, status_code=status.HTTP_202_ACCEPTED, tags=["feedback"])
async def feedback(body: FeedbackEvent, service: DecideServiceDep) -> FeedbackAccepted:
    """Queue a FeedbackEvent for the feedback topic (non-blocking, spooled during a broker outage)."""
    service.feedback(body)
    return FeedbackAccepted(request_id=body.request_id)
