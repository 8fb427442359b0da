"""Admin endpoints (X-API-Key): model promote/rollback/status and experiments create/weights/stop."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from models.errors import RegistryError, UnknownProblemError
from models.problems import get_problem
from serving.api.deps import AdminDep, ExperimentsDep, ModelsDep
from serving.errors import ExperimentError, InferenceError, UnknownExperimentError
from serving.experiments import Experiment
from serving.schemas import ModelStatus, PromoteRequest, WeightsUpdate

router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[AdminDep])


def _problem(problem: str) -> str:
    try:
        return get_problem(problem).name
    except UnknownProblemError as exc:
        raise HTTPException(404, str(exc)) from None


def _status(models: ModelsDep, problem: str) -> ModelStatus:
    version = models.current_version(problem)
    name = models.get(problem).name if version is not None else None
    return ModelStatus(problem=problem, version=version, policy_name=name)


@router.get("/models/{problem}", response_model=ModelStatus)
async def model_status(problem: str, models: ModelsDep) -> ModelStatus:
    return _status(models, _problem(problem))


@router.post("/models/{problem}/promote", response_model=ModelStatus)
async def promote(problem: str, body: PromoteRequest, models: ModelsDep) -> ModelStatus:
    """Load and warm the version (sha256-checked), record it in the registry, then switch to it."""
    problem = _problem(problem)
    try:
        await models.promote(problem, body.version)
    except (RegistryError, InferenceError) as exc:
        raise HTTPException(409, str(exc)) from None
    return _status(models, problem)


@router.post("/models/{problem}/rollback", response_model=ModelStatus)
async def rollback(problem: str, models: ModelsDep) -> ModelStatus:
    problem = _problem(problem)
    try:
        await models.rollback(problem)
    except (RegistryError, InferenceError) as exc:
        raise HTTPException(409, str(exc)) from None
    return _status(models, problem)


@router.get("/experiments", response_model=list[Experiment], tags=["experiments"])
async def list_experiments(experiments: ExperimentsDep) -> list[Experiment]:
    return experiments.all()


@router.post("/experiments", response_model=Experiment, status_code=201, tags=["experiments"])
async def create_experiment(body: Experiment, experiments: ExperimentsDep, models: ModelsDep) -> Experiment:
    """Create an experiment; each arm's policy version is loaded and warmed before traffic reaches it."""
    try:
        for arm in body.arms:
            if arm.version != "current":
                await models.ensure_loaded(body.problem, arm.version)
        return experiments.create(body)
    except (RegistryError, InferenceError, ExperimentError) as exc:
        raise HTTPException(409, str(exc)) from None


@router.patch("/experiments/{name}/weights", response_model=Experiment, tags=["experiments"])
async def update_weights(name: str, body: WeightsUpdate, experiments: ExperimentsDep) -> Experiment:
    try:
        return experiments.update_weights(name, body.weights)
    except UnknownExperimentError as exc:
        raise HTTPException(404, str(exc)) from None
    except ExperimentError as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/experiments/{name}/stop", response_model=Experiment, tags=["experiments"])
async def stop_experiment(name: str, experiments: ExperimentsDep) -> Experiment:
    try:
        return experiments.stop(name)
    except UnknownExperimentError as exc:
        raise HTTPException(404, str(exc)) from None
