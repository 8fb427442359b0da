"""Deploy a gated, registered candidate as a canary: an A/B experiment where it takes a configured share of traffic.

What it does, in order (each step idempotent for the run):

1. builds the experiment `retrain-<problem>-<interval key>`: arm `control`
   serves the promoted version (`current`), arm `candidate` serves the new
   version at `canary_share` of the units (assignment is serving's
   sha256(salt + user id), serving/experiments.py);
2. writes it into the experiments YAML file (`<home>/experiments.yaml` unless
   configured), stopping any earlier running experiment of the same problem,
   so a restarted decision API comes back with the canary;
3. when a decision API is configured (`TROUPE_SERVING_URL` and an admin key
   from `TROUPE_DEPLOY_ADMIN_KEY` or the first of `TROUPE_ADMIN_API_KEYS`),
   creates the experiment there through the admin endpoints (stopping the
   problem's running one first) — the API loads and warms the version before
   any traffic reaches it;
4. optionally writes a Triton model repository for the version (production
   inference behind Triton), through serving's exporter;
5. records `deploy/deploy.json`: experiment, arms, version, and the OPE
   estimate of the lift made before launch, which the A/B report shows next to
   the measured lift.

Promotion to 100% is a separate, human (or later automated) decision: this job
never calls `promote`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.errors import TroupeError
from models.settings import get_settings
from pipelines.jobs.loop import read_done, require, write_done, write_json

DEPLOY_DIR = "deploy"
CONTROL_ARM = "control"
CANDIDATE_ARM = "candidate"


class DeployError(TroupeError):
    """The canary could not be started; the message says where it failed."""


@dataclass(frozen=True)
class DeployConfig:
    """Where and how the canary starts."""

    canary_share: float = 0.1
    """Share of units (users) whose decisions the candidate takes, in (0, 1]."""
    experiments_file: Path | None = None
    """The decision API's experiments YAML; None = `<home>/experiments.yaml`."""
    serving_url: str | None = None
    """Base URL of a running decision API (e.g. http://127.0.0.1:8080); None = file only."""
    admin_api_key: str | None = field(default=None, repr=False)
    """Admin key for that API (sent as X-API-Key, never logged, written or shown in the repr)."""
    triton_repository: Path | None = None
    """Write a Triton model repository for the candidate here; None = skip."""
    triton_variant: Literal["gpu", "cpu"] = "gpu"
    """Triton config: gpu (onnxruntime_onnx, KIND_GPU, production) or cpu (python backend, tests)."""
    timeout_s: float = 30.0
    """HTTP timeout for the admin calls (the API loads and warms the model inside the call)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.canary_share <= 1.0:
            raise ValueError(f"DeployConfig.canary_share: expected a share in (0, 1], got {self.canary_share}")
        if self.serving_url is not None and not self.serving_url.startswith(("http://", "https://")):
            raise ValueError(f"DeployConfig.serving_url: expected http(s)://host:port, got {self.serving_url!r}")
        if self.serving_url is not None and not self.admin_api_key:
            raise ValueError(
                "DeployConfig.admin_api_key: a serving_url needs an admin key "
                "(set TROUPE_DEPLOY_ADMIN_KEY or TROUPE_ADMIN_API_KEYS)"
            )
        if self.triton_variant not in ("gpu", "cpu"):
            raise ValueError(f"DeployConfig.triton_variant: expected 'gpu' or 'cpu', got {self.triton_variant!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"DeployConfig.timeout_s: expected > 0, got {self.timeout_s}")

    @classmethod
    def from_env(cls, canary_share: float) -> DeployConfig:
        """Serving URL and admin key from TROUPE_SERVING_URL and TROUPE_DEPLOY_ADMIN_KEY / TROUPE_ADMIN_API_KEYS."""
        url = os.environ.get("TROUPE_SERVING_URL") or None
        key = os.environ.get("TROUPE_DEPLOY_ADMIN_KEY") or next(
            (k.strip() for k in os.environ.get("TROUPE_ADMIN_API_KEYS", "").split(",") if k.strip()), None
        )
        triton = os.environ.get("TROUPE_DEPLOY_TRITON_REPOSITORY") or None
        files = os.environ.get("TROUPE_EXPERIMENTS_FILE") or None
        return cls(
            canary_share=canary_share,
            experiments_file=Path(files) if files else None,
            serving_url=url,
            admin_api_key=key if url else None,
            triton_repository=Path(triton) if triton else None,
        )


def experiment_for(
    problem: str, version: str, interval_key: str, canary_share: float, exploration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The canary experiment as serving's YAML/admin body (serving/experiments.py `Experiment`).

    The candidate arm gets `exploration` — the same settings its off-policy
    evaluation assumed (pipelines/jobs/dag_steps.py `evaluate_step`).
    """
    name = f"retrain-{problem}-{interval_key}"
    arms: list[dict[str, Any]] = [{"name": CANDIDATE_ARM, "weight": canary_share, "version": version}]
    if exploration:
        arms[0]["exploration"] = dict(exploration)
    if canary_share < 1.0:
        arms.insert(0, {"name": CONTROL_ARM, "weight": round(1.0 - canary_share, 6), "version": "current"})
    return {"name": name, "problem": problem, "salt": name, "arms": arms, "status": "running"}


def write_experiments_file(path: Path, experiment: dict[str, Any]) -> None:
    """Add `experiment` to the YAML file, stopping any other running experiment of its problem."""
    from models.registry import atomic_write_bytes

    data: dict[str, Any] = {"experiments": []}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get("experiments", []), list):
            raise DeployError(f"{path}: expected a mapping with an 'experiments' list; fix or move the file")
        data = {"experiments": list(loaded.get("experiments", []))}
    kept: list[dict[str, Any]] = []
    for exp in data["experiments"]:
        if exp.get("name") == experiment["name"]:
            continue
        if exp.get("problem") == experiment["problem"] and exp.get("status", "running") == "running":
            exp = {**exp, "status": "stopped"}
        kept.append(exp)
    kept.append(experiment)
    atomic_write_bytes(path, yaml.safe_dump({"experiments": kept}, sort_keys=False).encode())


def running_experiments(experiments_file: Path | None = None) -> list[dict[str, Any]]:
    """The running experiments of the experiments YAML file (`<home>/experiments.yaml` by default)."""
    path = experiments_file or Path(
        os.environ.get("TROUPE_EXPERIMENTS_FILE") or get_settings().home / "experiments.yaml"
    )
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    return [e for e in data.get("experiments", []) if e.get("status", "running") == "running"]


def start_on_server(cfg: DeployConfig, experiment: dict[str, Any]) -> dict[str, Any]:
    """Create the experiment on a running decision API (stopping the problem's running one first)."""
    import httpx

    assert cfg.serving_url is not None and cfg.admin_api_key is not None
    headers = {"X-API-Key": cfg.admin_api_key}
    base = cfg.serving_url.rstrip("/")
    with httpx.Client(base_url=base, headers=headers, timeout=cfg.timeout_s) as client:
        listed = client.get("/v1/experiments")
        _check(listed, "list experiments")
        for exp in listed.json():
            if exp["name"] == experiment["name"] and exp["status"] == "running":
                return dict(exp)  # already started by an earlier try of this run
            if exp["problem"] == experiment["problem"] and exp["status"] == "running":
                _check(client.post(f"/v1/experiments/{exp['name']}/stop"), f"stop experiment {exp['name']}")
        created = client.post("/v1/experiments", json=experiment)
        _check(created, f"create experiment {experiment['name']}")
        return dict(created.json())


def _check(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise DeployError(f"decision API refused to {what}: HTTP {response.status_code}: {response.text[:500]}")


def ope_summary(evaluation_report: Path, estimator: str | None = None) -> dict[str, Any]:
    """The pre-launch OPE estimate of the candidate's lift on the main signal (the gate's estimator, else the primary)."""
    report = json.loads(evaluation_report.read_text())
    primary = estimator or report["primary_estimator"]
    main = report["main_signal"]
    entry = report["estimators"][primary]
    diff = entry["difference"]["signals"][main]
    base = entry["baseline"]["signals"][main]
    cand = entry["candidate"]["signals"][main]
    return {
        "estimator": primary,
        "signal": main,
        "confidence": report.get("confidence", 0.95),
        "candidate": cand["value"],
        "baseline": base["value"],
        "difference": diff["value"],
        "difference_ci": [diff["ci_low"], diff["ci_high"]],
        "relative_lift": diff["value"] / base["value"] if base["value"] else None,
        "relative_lift_ci": [diff["ci_low"] / base["value"], diff["ci_high"] / base["value"]]
        if base["value"]
        else None,
    }


def _gate_estimator(run_dir: Path) -> str | None:
    """The estimator the gate decided with (gate/gate.json), so the recorded estimate is the one that let it pass."""
    path = run_dir / "gate" / "gate.json"
    return str(json.loads(path.read_text())["estimator"]) if path.is_file() else None


def run_deploy(
    problem: str,
    registered: dict[str, Any],
    evaluation: dict[str, Any],
    *,
    canary_share: float = 0.1,
    cfg: DeployConfig | None = None,
) -> dict[str, Any]:
    """Start the canary for `registered["version"]`; returns and records what was deployed."""
    cfg = cfg or DeployConfig.from_env(canary_share)
    run_dir = Path(registered["run_dir"])
    out_dir = run_dir / DEPLOY_DIR
    done = read_done(out_dir)
    if done is not None and done.get("canary_share") == cfg.canary_share:
        return done
    version = str(registered["version"])
    exploration = dict(evaluation.get("candidate_exploration") or {})
    experiment = experiment_for(problem, version, str(registered["interval_key"]), cfg.canary_share, exploration)
    experiments_file = cfg.experiments_file or (get_settings().home / "experiments.yaml")
    write_experiments_file(experiments_file, experiment)
    server = start_on_server(cfg, experiment) if cfg.serving_url else None
    triton = None
    if cfg.triton_repository is not None:
        triton_repo = require("serving.triton_repository", None, "the serving issue (#6): `troupe triton export-repo`")
        from models.registry import ModelRegistry

        names = triton_repo.export_repository(
            ModelRegistry(get_settings().registry_dir),
            cfg.triton_repository,
            [problem],
            triton_repo.RepositoryOptions(variant=cfg.triton_variant),
            versions={problem: [version]},
        )
        triton = {"repository": str(cfg.triton_repository), "models": list(names)}
    result = {
        "problem": problem,
        "version": version,
        "experiment": experiment["name"],
        "arms": experiment["arms"],
        "canary_share": cfg.canary_share,
        "experiments_file": str(experiments_file),
        "started_on_server": server is not None,
        "serving_url": cfg.serving_url,
        "triton_repository": triton,
        "ope": ope_summary(Path(evaluation["report"]), _gate_estimator(run_dir)),
        "run_dir": str(run_dir),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "deploy.json", result)
    return write_done(out_dir, result)
