"""Bodies the API refuses before any parsing: wrong media type (415) and JSON nested too deep (422).

Why: a browser may send a "simple" cross-site POST (text/plain, form data)
without a CORS preflight, so a decide or admin call that accepted any
Content-Type could be triggered from another site; and Python's `json` module
recurses once per nesting level, so a 10 KB body of `[[[[…` raised
RecursionError (a 500 with a traceback per request).

Rules (ours; RFC 9110 §15.5.16 for 415):
* a POST, PUT or PATCH *with a body* must say `Content-Type: application/json`
  (parameters such as `charset=utf-8` allowed, or an `application/*+json`
  type); otherwise 415. Bodyless POSTs (rollback, stop) need no type;
* JSON nested deeper than `MAX_JSON_DEPTH` levels is refused with 422 naming
  the limit. Decide bodies are checked on their slow path only
  (serving/api/body.py): every valid one is 4 levels deep, and the fast
  parsers refuse deeper ones without recursing in Python. Other bodies
  (feedback, admin) are checked here, before FastAPI parses them.

Every refusal uses the API's one error shape (`error_body`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have; the deepest valid body has 4."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def error_body(message: str, loc: list[Any] | None = None, kind: str = "error") -> dict[str, Any]:
    """The one error shape of every 4xx/5xx answer: a sentence, and the parts at fault."""
    return {"message": message, "detail": [{"loc": loc or [], "msg": message, "type": kind}]}


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of the arrays/objects in `raw` (strings skipped), counted up to `limit + 1` at most."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The 422 message when `raw` nests deeper than `limit`, else None."""
    if json_depth(raw, limit) > limit:
        return f"body: JSON nested deeper than {limit} levels; the deepest valid request has 4"
    return None


def is_json_media_type(value: str | None) -> bool:
    if value is None:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


class JsonGuard:
    """415 for a body that is not declared JSON; 422 for JSON nested too deep (non-decide paths)."""

    def __init__(self, app: ASGIApp, decide_paths: frozenset[str], max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.decide_paths = decide_paths
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        if has_body and not is_json_media_type(content_type):
            got = f"{content_type!r}" if content_type else "no Content-Type"
            msg = f"request bodies must be JSON: send 'Content-Type: application/json' (got {got})"
            await _answer(send, 415, error_body(msg, ["header", "content-type"], "unsupported_media_type"))
            return
        if not has_body or scope["path"] in self.decide_paths:
            await self.app(scope, receive, send)
            return
        # Buffer the body (BodySizeLimit, outside, bounds it), check its depth, then replay it.
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = too_deep(body, self.max_depth)
        if problem is not None:
            await _answer(send, 422, error_body(problem, ["body"], "json_too_deep"))
            return
        try:
            json.loads(body)  # FastAPI would answer 400 with another shape; invalid JSON is a 422 everywhere here
        except ValueError as exc:
            await _answer(send, 422, error_body(f"body: not valid JSON: {exc}", ["body"], "json_invalid"))
            return
        pending = iter(messages)

        async def replay() -> Message:
            try:
                return next(pending)
            except StopIteration:
                return await receive()

        await self.app(scope, replay, send)


def _allowed_methods(request: Any) -> str:
    """Every method some route takes at this path (Starlette's 405 names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def add_error_shape(app: Any) -> None:
    """HTTPException (401, 403, 404, 405, 409, 503 …) and unexpected errors answered in `error_body`'s shape."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return JSONResponse(
            error_body(message, [], f"http_{exc.status_code}"), status_code=exc.status_code, headers=headers
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log once (uvicorn); the client gets no internals.
        return JSONResponse(error_body("internal error; the service logged it", [], "internal_error"), 500)

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
