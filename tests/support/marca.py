"""A MaRCA `allocate` version in a registry: a small (untrained) learner's serving graph, the simulator's cost
table and a load model — the files a trained version ships (training/algorithms/marca_export.py)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import torch

from models.problems import ALLOCATE
from models.registry import ArtifactManifest, LoadedVersion, ModelRegistry, TensorSpec
from serving.balancer import LoadModel
from training.algorithms import marca as M
from training.algorithms import marca_export as X
from training.envs.allocate import AllocateConfig

SMALL = M.MarcaConfig(num_heads=2, hidden_size=8, encoder_size=16, mixer_embed_size=8)
# A load model the balancer trusts (rmse under MPCBalancer.max_rmse): Ĉ' = 0.5·Ĉ + q·1.77·exp(−λ/2) — it
# predicts the 1.3 the integration test reports at λ = 2, so the MPC's answer to that reading is a higher λ.
LOAD_MODEL = LoadModel(theta=(0.0, 0.5, 0.0, 1.77), lambda_scale=2.0, rmse=0.02)


def register_marca(
    registry: ModelRegistry,
    version: str,
    *,
    seed: int = 0,
    reward_scale: float = 0.05,
    load_model: LoadModel | None = LOAD_MODEL,
    promote: bool = False,
    config: M.MarcaConfig = SMALL,
) -> LoadedVersion:
    """`config`: the network sizes (benchmarks pass the default MarcaConfig, the size a trained version has)."""
    torch.manual_seed(seed)
    learner = M.MarcaLearner(config).eval()
    learner.reward_scale.fill_(reward_scale)
    with tempfile.TemporaryDirectory() as tmp:
        files = X.export_policy(
            learner,
            X.simulator_cost_model(AllocateConfig(), learner),
            Path(tmp),
            load_model=None if load_model is None else load_model.to_dict(),
        )
        manifest = ArtifactManifest(
            name="marca-test",
            version=version,
            problem="allocate",
            algorithm="marca",
            created_at=dt.datetime.now(dt.UTC),
            inputs=[TensorSpec(name="observation", shape=["batch", ALLOCATE.observation_size])],
            outputs=[TensorSpec(name=X.OUTPUT, shape=["batch", sum(learner.split.num_actions)])],
            feature_service=ALLOCATE.feature_service,
        )
        loaded = registry.register(manifest, {k: str(v) for k, v in files.items()})
    if promote:
        registry.promote("allocate", version)
    return loaded
