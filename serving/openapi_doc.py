"""What the OpenAPI document adds to FastAPI's: every status code, the API key as a security scheme, examples.

FastAPI documents only 200 and its own 422 by default; the API also answers
401/403 (keys), 404 (unknown problem or experiment), 409 (a version that
cannot be promoted, an experiment conflict), 413 (body over the limit), 415
(not JSON), 422 (invalid or too deeply nested JSON) and 503 (starting). Every
error has the same body (`ErrorBody`, serving/json_guard.py). The example of
each request body is validated against its model by
tests/unit/test_serving_openapi.py, so a schema change cannot leave a stale one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

API_KEY_SCHEME = "ApiKey"

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["message", "detail"],
    "properties": {
        "message": {"type": "string", "description": "what was wrong and how to fix it"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "example": {
        "message": "body.session_depth: Input should be greater than or equal to 0",
        "detail": [
            {"loc": ["body", "session_depth"], "msg": "Input should be greater than or equal to 0", "type": "error"}
        ],
    },
}

_SIGNALS = {"watch_time": 42.0, "click": 0.3, "like": 0.05, "follow": 0.01, "comment": 0.02, "share": 0.01}
EXAMPLES: dict[str, dict[str, Any]] = {
    "RankRequest": {
        "user_id": "user-42",
        "session_depth": 3,
        "hour_of_day": 20.5,
        "candidates": [{"id": f"v{i}", "signals": _SIGNALS} for i in range(3)],
    },
    "SlotRequest": {
        "user_id": "user-42",
        "session_depth": 2,
        "hour_of_day": 21.0,
        "page": [{"id": f"p{i}", "predicted_watch_time": 30.0 + i} for i in range(6)],
        "live_candidates": [{"id": "live1", "predicted_watch_time": 120.0, "quality": 0.8, "audience": 1500.0}],
    },
    "AllocateRequest": {
        "user_id": "user-42",
        "hour_of_day": 9.0,
        "request_value": 35.5,
        "system_load": 0.7,
        "budget_utilisation": 0.4,
    },
    "FeedbackEvent": {
        "request_id": "3f2a9c0d5e6b4a718293a4b5c6d7e8f9",
        "timestamp": "2026-12-04T10:00:00Z",
        "user_id": "user-42",
        "problem": "slot",
        "signals": {"watch_time": 35.0, "click": 1.0, "live_exposure": 1.0, "live_watch_time": 80.0},
    },
    "PromoteRequest": {"version": "v2"},
    "WeightsUpdate": {"weights": {"control": 0.5, "treatment": 0.5}},
    "Experiment": {
        "name": "slot-exploration",
        "problem": "slot",
        "salt": "slot-exploration-2026-12",
        "arms": [
            {"name": "control", "weight": 0.5, "version": "current"},
            {"name": "treatment", "weight": 0.5, "version": "current", "exploration": {"temperature": 0.5}},
        ],
    },
    "LambdaUpdate": {"value": 1.5},
    "BalancerReading": {"utilisation": 0.97, "traffic": 1.12, "slot": 76},
}
"""One valid example per request body model (name = the schema's name in components)."""

_ERRORS = {
    "401": "missing or wrong X-API-Key header",
    "403": "admin endpoints are disabled (no TROUPE_ADMIN_API_KEYS)",
    "404": "unknown problem, experiment or path",
    "409": "the change cannot be applied (version refused by its checks, experiment conflict)",
    "413": "request body over the size limit (TROUPE_MAX_BODY_BYTES)",
    "415": "the body is not declared as application/json",
    "422": "invalid body: a field out of range, unknown, missing, not JSON, or JSON nested too deep",
    "503": "not ready: starting, or a served problem / the feature store / the producer is not ready",
}


def _error(code: str) -> dict[str, Any]:
    return {
        "description": _ERRORS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def _codes(path: str, method: str, has_body: bool) -> list[str]:
    codes: list[str] = []
    if path.startswith("/v1/"):
        codes += ["401", "503"]
        admin = path.startswith(("/v1/models", "/v1/experiments"))
        if admin or path.startswith("/v1/allocate/"):
            codes.append("403")
            if method != "get":
                codes.append("409")
        if "{" in path:
            codes.append("404")
    if has_body:
        codes += ["413", "415", "422"]
    elif method == "post":
        codes += ["413", "415"]
    return codes


def add_openapi_details(app: FastAPI) -> None:
    """Wrap `app.openapi` (after add_body_schemas) with error responses, the security scheme and examples."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app, "_troupe_openapi_done", False) and app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["ErrorBody"] = ERROR_BODY_SCHEMA
        components["securitySchemes"] = {
            API_KEY_SCHEME: {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "admin endpoints: one of TROUPE_ADMIN_API_KEYS; decide and feedback: "
                "TROUPE_DECIDE_API_KEY when it is set",
            }
        }
        served = list(getattr(getattr(app.state, "settings", None), "problems", []) or [])
        feedback = schemas.get("FeedbackEvent", {}).get("properties", {})
        if served and "problem" in feedback:
            # Only the problems this instance serves are accepted (422 otherwise): say so in the schema.
            feedback["problem"] = {"anyOf": [{"enum": served, "type": "string"}, {"type": "null"}], "default": None}
        for name, example in EXAMPLES.items():
            if name in schemas:
                schemas[name]["example"] = example
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                body = op.get("requestBody")
                if body is not None:
                    for media in body.get("content", {}).values():
                        ref = media.get("schema", {}).get("$ref", "")
                        body_example = EXAMPLES.get(ref.rsplit("/", 1)[-1])
                        if body_example is not None:
                            media["example"] = body_example
                codes = _codes(path, method, body is not None)
                if "422" in op["responses"]:
                    codes.append("422")  # FastAPI's own 422 has another body shape
                if path == "/readyz":
                    codes += ["404", "503"]  # 404: ?problem= names a problem this instance does not serve
                for code in codes:
                    op["responses"][code] = _error(code)
                if path.startswith(("/v1/models", "/v1/experiments")):
                    op["security"] = [{API_KEY_SCHEME: []}]
                elif path.startswith("/v1/"):
                    op["security"] = [{}, {API_KEY_SCHEME: []}]  # a key only when TROUPE_DECIDE_API_KEY is set
                # The header is the security scheme now, not a parameter of its own.
                params = [p for p in op.get("parameters", []) if p.get("name", "").lower() != "x-api-key"]
                if params:
                    op["parameters"] = params
                else:
                    op.pop("parameters", None)
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        app._troupe_openapi_done = True  # type: ignore[attr-defined]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
