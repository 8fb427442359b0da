"""POST /v1/decide/{rank,slot,allocate}, answered by a pure-ASGI middleware in front of Starlette's routing.

Why: Starlette's route matching, its Request and Response objects and the
exception middleware cost ~40 µs of CPU per request — a quarter of a whole
slot decision in process (benchmarks/serving_profile.py: 161 → 121 µs), and
the decision API is CPU-bound, so throughput per core rises by about as much.

What it does is what the routes in serving/api/decide.py do, with the same
functions: read the body, parse it (`parse_bytes`, with the rank fast
decoder), check the decide key (`checked_service`), decide, answer the same
JSON. Errors go to the app's own exception handlers, so a 401, 413, 422 or
503 has the status and body the routes would give. Everything else (another
method or path, a trailing slash, a mounted root path) goes on to the app.
The routes stay: they define the OpenAPI document and answer when this
middleware is not installed; tests/unit/test_serving_fast_decide.py checks that both
answer alike. `BodySizeLimit` sits outside this middleware, so the body limit
applies here too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api.body import parse_bytes
from serving.api.decide import DECIDE_ROUTES, decision_json
from serving.api.deps import checked_service

_JSON = (b"content-type", b"application/json")


def _header(scope: Scope, name: bytes) -> str | None:
    # ASGI servers lower-case header names.
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _handler_for(handlers: Mapping[Any, Callable[..., Any]], exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for `exc`: the nearest class in its MRO, as Starlette's ExceptionMiddleware looks it up."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastDecide:
    """Answers the decide routes before routing; add it inside `BodySizeLimit`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = DECIDE_ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        problem, model, fast = route
        app = scope["app"]  # the FastAPI app: Starlette puts itself here before any middleware runs
        try:
            raw = await _read_body(receive)
            if raw is None:
                return
            body = parse_bytes(raw, model, fast)
            service = checked_service(getattr(app.state, "troupe", None), _header(scope, b"x-api-key"))
            payload = decision_json(await service.decide(problem, body))
        except Exception as exc:
            handler = _handler_for(app.exception_handlers, exc)
            if handler is None:
                raise  # Starlette's ServerErrorMiddleware answers 500, as for the routes
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode()), _JSON],
            }
        )
        await send({"type": "http.response.body", "body": payload})
