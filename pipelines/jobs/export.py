"""Export a gated candidate: ONNX + parity, proving the files to be registered are the trained, evaluated policy.

The train step exported the actor(s) to ONNX (training/export.py, parity
checked there) and the evaluate step scored those exact files. Only a
candidate that passed the gate gets here. This step rebuilds the learner from
its safetensors checkpoint (stepped back as the train step's trust region
chose, if it ran: `shipped_actor`) and exports it again through `export_policy`
(torch vs onnxruntime ≤ 1e-5 on 1,000 random observations), then checks that
each evaluated file answers like the fresh export on the same random inputs. A
file changed or corrupted since training is caught here, before it can reach
the registry; the evaluated files are what gets registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.errors import TroupeError
from models.problems import get_problem
from pipelines.jobs.loop import read_done, require, write_done
from pipelines.jobs.train import POLICIES, load_learner, shipped_actor

EXPORT_DIR = "export"
PARITY_TOLERANCE = 1e-5
PARITY_SAMPLES = 1000


class ExportParityError(TroupeError):
    """An evaluated ONNX file does not match the trained checkpoint; it must not ship."""


def onnx_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"observation": x}), strict=True))


def compare_files(evaluated: Path, fresh: Path, obs_size: int, seed: int = 0) -> float:
    """max |evaluated − fresh| over every output on random observations; raises ExportParityError above tolerance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((PARITY_SAMPLES, obs_size)).astype(np.float32)
    x[: PARITY_SAMPLES // 10] *= 5.0
    try:
        a = onnx_outputs(evaluated, x)
    except Exception as err:  # a corrupted file fails to load: that is a parity failure too
        raise ExportParityError(f"{evaluated}: onnxruntime cannot run it ({err}); re-run training") from None
    b = onnx_outputs(fresh, x)
    if set(a) != set(b):
        raise ExportParityError(f"{evaluated}: outputs {sorted(a)} differ from the checkpoint's export {sorted(b)}")
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    if not worst <= PARITY_TOLERANCE:
        raise ExportParityError(
            f"{evaluated}: differs from the trained checkpoint by {worst:.3g} > {PARITY_TOLERANCE:g}; "
            "the evaluated file is not the trained policy — re-run the retraining"
        )
    return worst


def run_export(problem: str, trained: dict[str, Any]) -> dict[str, Any]:
    """Re-export from the checkpoint and check the evaluated files against it; returns what `register` needs."""
    run_dir = Path(trained["run_dir"])
    out_dir = run_dir / EXPORT_DIR
    done = read_done(out_dir)
    if done is not None:
        return done
    export = require("training.export", "export_policy", POLICIES)
    spec = get_problem(problem)
    learner = load_learner(problem, trained)
    shipped = require("training.rl.losses", "shipped_policy", POLICIES)(learner)
    fresh = export(shipped_actor(shipped, trained), spec, out_dir / "onnx")
    pairs = {"model.onnx": Path(trained["onnx"])}
    pairs |= {f"{agent}.onnx": Path(path) for agent, path in (trained.get("agents") or {}).items()}
    parity: dict[str, float] = {}
    for name, evaluated in pairs.items():
        if name not in fresh:
            raise ExportParityError(f"the checkpoint's export has no {name}; it has {sorted(fresh)}")
        obs_size = int(fresh[name].inputs[0].shape[1])
        parity[name] = max(float(fresh[name].max_abs_diff), compare_files(evaluated, fresh[name].path, obs_size))
    return write_done(
        out_dir,
        {
            "problem": problem,
            "algorithm": trained["algorithm"],
            "onnx": trained["onnx"],
            "agents": trained.get("agents") or {},
            "checkpoint": trained["checkpoint"],
            "metrics": {
                **(trained.get("metrics") or {}),
                "export/parity_max_abs_diff": max(parity.values()),
            },
            "parity": parity,
            "run_dir": str(run_dir),
        },
    )
