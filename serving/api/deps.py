"""Dependencies handed to the routers through `Annotated[..., Depends(...)]` aliases.

The lifespan puts one `AppState` on `app.state.troupe`; tests replace any of
these with `app.dependency_overrides`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from serving.decision_log import EventProducer
from serving.experiments import ExperimentStore
from serving.lifecycle import ModelManager
from serving.metrics import ServingMetrics
from serving.service import DecisionService
from serving.settings import ServingSettings, get_settings
from serving.state_store import StateStore


@dataclass
class AppState:
    settings: ServingSettings
    service: DecisionService
    producer: EventProducer
    state_store: StateStore | None = None
    """Shared mutable state (serving/state_store.py) when TROUPE_STATE_STORE_URL is set."""


STARTING = "the service is starting; models and clients are not loaded yet"

# Every dependency is `async def`: FastAPI runs sync dependencies on a worker
# thread, a hop that cost more than the whole decision in profiles.


async def get_app_settings(request: Request) -> ServingSettings:
    """The settings the app was built with (tests may override this dependency)."""
    settings: ServingSettings | None = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


async def get_state(request: Request) -> AppState:
    state: AppState | None = getattr(request.app.state, "troupe", None)
    if state is None:
        raise HTTPException(503, STARTING)
    return state


async def get_service(state: Annotated[AppState, Depends(get_state)]) -> DecisionService:
    return state.service


async def get_models(service: Annotated[DecisionService, Depends(get_service)]) -> ModelManager:
    return service.models


async def get_experiments(service: Annotated[DecisionService, Depends(get_service)]) -> ExperimentStore:
    return service.experiments


async def get_metrics(service: Annotated[DecisionService, Depends(get_service)]) -> ServingMetrics:
    return service.metrics


SettingsDep = Annotated[ServingSettings, Depends(get_app_settings)]
StateDep = Annotated[AppState, Depends(get_state)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
ModelsDep = Annotated[ModelManager, Depends(get_models)]
ExperimentsDep = Annotated[ExperimentStore, Depends(get_experiments)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]


def _matches_any(given: str, keys: list[str]) -> bool:
    # Compare against every key so the time taken does not reveal which one (or whether any) matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


async def require_admin(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Admin endpoints: the X-API-Key header must match one of TROUPE_ADMIN_API_KEYS."""
    keys = [k.get_secret_value() for k in settings.admin_api_keys]
    if not keys:
        raise HTTPException(403, "admin endpoints are disabled: set TROUPE_ADMIN_API_KEYS to enable them")
    if x_api_key is None or not _matches_any(x_api_key, keys):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})


async def require_decide_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Decide and feedback: the X-API-Key header must match TROUPE_DECIDE_API_KEY when one is set."""
    if settings.decide_api_key is None:
        return
    if x_api_key is None or not _matches_any(x_api_key, [settings.decide_api_key.get_secret_value()]):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})


async def decide_service(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> DecisionService:
    """The decide/feedback dependency: key check (when TROUPE_DECIDE_API_KEY is set) and the service, in one step.

    One dependency instead of a chain: FastAPI's per-dependency cost showed up
    as a visible share of a decision in profiles.
    """
    return await service_for(request, x_api_key)


async def service_for(request: Request, x_api_key: str | None) -> DecisionService:
    """`decide_service` as a plain coroutine, for endpoints that skip FastAPI's dependency machinery."""
    return checked_service(getattr(request.app.state, "troupe", None), x_api_key)


def checked_service(state: AppState | None, x_api_key: str | None) -> DecisionService:
    """The service of a started app, after the decide key check (503 while starting, 401 on a wrong key)."""
    if state is None:
        raise HTTPException(503, STARTING)
    key = state.settings.decide_api_key
    if key is not None and (x_api_key is None or not _matches_any(x_api_key, [key.get_secret_value()])):
        raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    return state.service


AdminDep = Depends(require_admin)
DecideKeyDep = Depends(require_decide_key)
DecideServiceDep = Annotated[DecisionService, Depends(decide_service)]
