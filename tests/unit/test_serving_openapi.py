"""The OpenAPI document: every status code the API answers, the key as a security scheme, valid examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from models.events import FeedbackEvent
from serving.api.allocate_admin import BalancerReading, LambdaUpdate
from serving.app import create_app
from serving.experiments import Experiment
from serving.json_guard import MAX_JSON_DEPTH, json_depth, too_deep
from serving.openapi_doc import EXAMPLES
from serving.schemas import AllocateRequest, PromoteRequest, RankRequest, SlotRequest, WeightsUpdate
from serving.settings import ServingSettings

MODELS: dict[str, type[BaseModel]] = {
    "RankRequest": RankRequest,
    "SlotRequest": SlotRequest,
    "AllocateRequest": AllocateRequest,
    "FeedbackEvent": FeedbackEvent,
    "PromoteRequest": PromoteRequest,
    "WeightsUpdate": WeightsUpdate,
    "Experiment": Experiment,
    "LambdaUpdate": LambdaUpdate,
    "BalancerReading": BalancerReading,
}


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    home: Path = tmp_path_factory.mktemp("openapi")
    return create_app(ServingSettings(home=home)).openapi()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_is_a_valid_body(name: str) -> None:
    MODELS[name].model_validate(EXAMPLES[name])


def test_every_body_has_an_example_and_every_error_is_documented(doc: dict) -> None:  # type: ignore[type-arg]
    text = json.dumps(doc)
    refs = set(re.findall(r"#/components/schemas/(\w+)", text))
    assert refs <= set(doc["components"]["schemas"]), "every $ref resolves"
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": doc["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody")
            if body is not None:
                assert body["content"]["application/json"]["example"], (path, method)
                assert {"413", "415", "422"} <= set(op["responses"]), (path, method)
            if path.startswith("/v1/"):
                assert {"401", "503"} <= set(op["responses"]) and op["security"], (path, method)
            if path.startswith("/v1/models") and method == "post":
                assert {"403", "404", "409"} <= set(op["responses"]), (path, method)
            for code, response in op["responses"].items():
                if code[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }


def test_json_depth_skips_strings_and_stops_early() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[[[[["}]}') == 3
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == MAX_JSON_DEPTH + 1
    assert too_deep(b'{"x": "\\"[[[["}') is None
    assert "nested deeper than" in str(too_deep(b"[" * 40))
