"""POST /v1/decide/{problem} (one route per problem, so each has its own typed schema) and POST /v1/feedback.

In a running app the decide requests are answered one step earlier, by the
`FastDecide` middleware (serving/api/fast_decide.py), with the same functions;
these routes define the OpenAPI document and answer when it is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic_core import to_json

from models.events import FeedbackEvent
from serving.api.body import body_doc, parse_body
from serving.api.deps import DecideServiceDep, service_for
from serving.api.fast_body import decode_rank
from serving.errors import BadRequestError
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


def decision_json(outcome: Outcome) -> bytes:
    # The response is built by our code from validated parts: serialising it
    # directly skips FastAPI's re-validation against response_model (which still
    # documents it in OpenAPI) — a large share of the per-request cost.
    return to_json(outcome.response_fields())


# The decide routes take the raw Request and parse the body and check the key
# themselves: FastAPI's dependency resolution (three dependencies, a header
# parameter) cost ~150 µs per request, a quarter of a whole slot decision. The
# OpenAPI document is unchanged: body, X-API-Key header and 422 are declared here.
_KEY_HEADER = {
    "in": "header",
    "name": "x-api-key",
    "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Api-Key"},
}
_VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}


def _decide_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {**body_doc(model), "parameters": [_KEY_HEADER], "responses": {"422": _VALIDATION_ERROR}}


async def _decide(
    request: Request,
    problem: str,
    model: type[RankRequest | SlotRequest | AllocateRequest],
    fast: Callable[[bytes], RankRequest | None] | None = None,
) -> Response:
    body = await parse_body(request, model, fast)  # first, as the body dependency ran first
    service = await service_for(request, request.headers.get("x-api-key"))
    return Response(decision_json(await service.decide(problem, body)), media_type="application/json")


class _LeanRoute(APIRoute):
    """A route whose endpoint takes the raw Request and returns a Response: no dependency solving.

    FastAPI's request handler still runs `solve_dependencies` and its response
    machinery for an endpoint without parameters, a visible share of a slot
    decision in profiles. The OpenAPI document comes from the route's
    declarations (response_model, openapi_extra), which are unchanged, and
    exceptions still reach the app's handlers through Starlette's wrapper.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


router = APIRouter(prefix="/v1", tags=["decide"])
_lean = APIRouter(route_class=_LeanRoute)


BODY_MODELS: list[type[BaseModel]] = [RankRequest, SlotRequest, AllocateRequest]
# path → (problem, body model, fast decoder or None): what each decide route parses; FastDecide reads it too.
DECIDE_ROUTES: dict[str, tuple[str, type[RankRequest | SlotRequest | AllocateRequest], Any]] = {
    "/v1/decide/rank": ("rank", RankRequest, decode_rank),
    "/v1/decide/slot": ("slot", SlotRequest, None),
    "/v1/decide/allocate": ("allocate", AllocateRequest, None),
}


@_lean.post(
    "/decide/rank",
    response_model=RankResponse,
    summary="Fusion weights per cascade stage and the final ordering",
    openapi_extra=_decide_doc(RankRequest),
)
async def decide_rank(request: Request) -> Response:
    return await _decide(request, *DECIDE_ROUTES["/v1/decide/rank"])


@_lean.post(
    "/decide/slot",
    response_model=SlotResponse,
    summary="Insert one live stream into the page, and where",
    openapi_extra=_decide_doc(SlotRequest),
)
async def decide_slot(request: Request) -> Response:
    return await _decide(request, *DECIDE_ROUTES["/v1/decide/slot"])


@_lean.post(
    "/decide/allocate",
    response_model=AllocateResponse,
    summary="Computation per cascade stage for one request",
    openapi_extra=_decide_doc(AllocateRequest),
)
async def decide_allocate(request: Request) -> Response:
    return await _decide(request, *DECIDE_ROUTES["/v1/decide/allocate"])


router.include_router(_lean)


@router.post("/feedback", response_model=FeedbackAccepted, status_code=status.HTTP_202_ACCEPTED, tags=["feedback"])
async def feedback(body: FeedbackEvent, service: DecideServiceDep) -> FeedbackAccepted:
    """Queue a FeedbackEvent for the feedback topic; answered once it is in the write-ahead spool."""
    if body.problem is not None and body.problem not in service.settings.problems:
        raise BadRequestError(
            "body.problem", f"unknown problem {body.problem!r}; this service serves {list(service.settings.problems)}"
        )
    await service.feedback(body)
    return FeedbackAccepted(request_id=body.request_id)
