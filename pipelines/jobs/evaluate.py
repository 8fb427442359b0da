"""Off-policy evaluation job: a candidate policy version against a baseline, on logged transitions.

`run_evaluate(cfg)` reads a transitions dataset, loads both registry versions,
runs their ONNX policies (training/ope/policies.py) to get the probability
(discrete) or density (continuous) of every logged action, and reports every
estimator's value and CI for every signal, the paired candidate − baseline
difference with its CI, and the importance-weight diagnostics. It writes
`evaluation.json`, `evaluation.md` and `evaluation.png` into `cfg.output_dir`.

Transitions dataset (Parquet file or folder), one row per logged decision —
the columns this job reads are listed in `TRANSITION_COLUMNS`:

    observation        list<double>  flat observation, spec order
    action             list<double>  flat action (discrete choices as whole numbers)
    reward_<signal>    double        one column per signal of the problem spec
    next_observation   list<double>  observation of the session's next decision (any value when done)
    done               bool          the session ended after this decision
    propensity         double, null  behaviour probability of the action (discrete problems)
    log_density        double, null  behaviour log-density of the action (continuous problems)
    session_id         string        episode key for the sequential estimators
    timestamp          timestamp     orders decisions within a session
    (policy_version, arm, user_id: carried along, not needed here)

Estimators: one-step DM, IPS, SNIPS, DR, Switch-DR (+ NCIS for continuous
actions) estimate the per-decision mean of each signal — the quantity the
problem's constraints are stated in; sequential PDIS, WPDIS, sequential DR
and FQE estimate the discounted value per session with each signal's own γ.
The report's `primary_estimator` (what the gate reads) is DR for discrete
problems and NCIS for continuous ones.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import TroupeError
from models.logging import log_event
from models.problems import BoxAction, DiscreteAction, MultiDiscreteAction, ProblemSpec, get_problem

log = logging.getLogger("troupe.pipelines.evaluate")

FloatArray = npt.NDArray[np.float64]
TRANSITION_COLUMNS: tuple[str, ...] = (
    "observation",
    "action",
    "next_observation",
    "done",
    "propensity",
    "log_density",
    "session_id",
    "timestamp",
)


class EvaluationInputError(TroupeError, ValueError):
    """The dataset or configuration cannot be evaluated; the message names the column or option."""


@dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation of `candidate` against `baseline` for `problem`."""

    problem: str
    """Problem name (models/problems.py)."""
    candidate: str
    """Registry version of the candidate policy."""
    dataset: Path
    """Transitions Parquet file or folder (see the module docstring for the columns)."""
    output_dir: Path
    """Folder for evaluation.json / .md / .png (created)."""
    registry_root: Path
    """Model registry root (models/registry.py)."""
    baseline: str = "production"
    """Registry version of the baseline, or 'production' for the promoted one."""
    ci_method: str = "normal"
    """'normal' (closed form, delta method) or 'bootstrap' for the one-step and IS estimators (FQE always bootstraps)."""
    confidence: float = 0.95
    """Two-sided confidence level."""
    n_bootstrap: int = 1000
    """Bootstrap resamples when ci_method = 'bootstrap'."""
    clip: float | None = None
    """Cap on importance weights for IPS / SNIPS / DR (None = unclipped, unbiased)."""
    switch_tau: float = 20.0
    """Switch-DR threshold τ: rows whose weight exceeds it use the reward model only."""
    ncis_bandwidth: float = 0.1
    """NCIS Gaussian kernel bandwidth σ around the candidate's mean action (continuous problems)."""
    ncis_clip: float = 10.0
    """NCIS cap on each kernel ratio relative to the mean ratio."""
    reward_model_l2: float = 1e-3
    """Ridge penalty of the reward model behind DM / DR / Switch-DR."""
    sequential: bool = True
    """Also run PDIS, WPDIS, sequential DR and FQE over sessions."""
    fqe_bootstrap: int = 30
    """Episode-bootstrap refits for the FQE interval."""
    max_rows: int | None = None
    """Evaluate on the most recent `max_rows` decisions only (None = all)."""
    seed: int = 0
    """Seed of every resampling."""

    def __post_init__(self) -> None:
        get_problem(self.problem)
        if self.ci_method not in ("normal", "bootstrap"):
            raise EvaluationInputError(f"ci_method: expected 'normal' or 'bootstrap', got {self.ci_method!r}")
        if not 0 < self.confidence < 1:
            raise EvaluationInputError(f"confidence: expected a level in (0, 1), got {self.confidence}")
        for name in ("switch_tau", "ncis_bandwidth", "ncis_clip"):
            if not getattr(self, name) > 0:
                raise EvaluationInputError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if self.clip is not None and not self.clip > 0:
            raise EvaluationInputError(f"clip: expected a positive cap or None, got {self.clip}")
        if self.fqe_bootstrap < 20:
            raise EvaluationInputError(f"fqe_bootstrap: expected >= 20 refits, got {self.fqe_bootstrap}")
        if self.max_rows is not None and self.max_rows < 10:
            raise EvaluationInputError(f"max_rows: expected >= 10 or None, got {self.max_rows}")


# ---------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Transitions:
    """Logged decisions as arrays. N rows, D observation size, A flat action size, S signals."""

    observation: FloatArray  # (N, D)
    action: FloatArray  # (N, A)
    rewards: FloatArray  # (N, S)
    next_observation: FloatArray  # (N, D)
    done: FloatArray  # (N,)
    propensity: FloatArray  # (N,), NaN = missing
    log_density: FloatArray  # (N,), NaN = missing
    session: npt.NDArray[np.int64]  # (N,), contiguous episode index after sorting
    signals: tuple[str, ...]


def _stack(column: Sequence[Any], name: str, widths: tuple[int, ...]) -> FloatArray:
    try:
        arr = np.asarray([np.asarray(v, dtype=np.float64) for v in column])
    except (TypeError, ValueError) as err:
        raise EvaluationInputError(f"column {name!r}: expected lists of numbers of one length ({err})") from None
    if arr.ndim != 2 or arr.shape[1] not in widths:
        raise EvaluationInputError(
            f"column {name!r}: expected lists of length {' or '.join(map(str, widths))}, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(f"column {name!r}: values must be finite")
    return arr


def read_transitions(path: Path, spec: ProblemSpec, max_rows: int | None = None) -> Transitions:
    """Read and check a transitions dataset; rows are sorted by (session_id, timestamp)."""
    import pyarrow.dataset as ds

    if not path.exists():
        raise EvaluationInputError(
            f"dataset {path} does not exist; build it with `troupe dataset build` or pass --dataset"
        )
    if path.is_dir():
        # The dataset builder writes transitions.parquet next to card.json; read only the Parquet files.
        files = sorted(
            str(p)
            for p in path.rglob("*.parquet")
            if not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise EvaluationInputError(f"dataset folder {path} holds no .parquet files")
        table = ds.dataset(files, format="parquet").to_table()
    else:
        table = ds.dataset(str(path), format="parquet").to_table()
    reward_cols = [f"reward_{s}" for s in spec.signal_names]
    missing = [c for c in (*TRANSITION_COLUMNS, *reward_cols) if c not in table.column_names]
    if missing:
        raise EvaluationInputError(
            f"dataset {path} lacks columns {missing}; expected {list(TRANSITION_COLUMNS)} + {reward_cols}"
        )
    df = table.select([*TRANSITION_COLUMNS, *reward_cols]).to_pandas()
    if df.empty:
        raise EvaluationInputError(f"dataset {path} has no rows")
    df = df.sort_values(["timestamp"], kind="stable")
    if max_rows is not None:
        df = df.iloc[-max_rows:]
    df = df.sort_values(["session_id", "timestamp"], kind="stable").reset_index(drop=True)
    d = spec.observation_size
    widths = (d, 3 * d) if spec.name == "rank" else (d,)
    obs = _stack(df["observation"].tolist(), "observation", widths)
    # A terminal row may carry no next observation; its value is never used (done = 1), so the row's own stands in.
    next_list = [
        o if n is None else n for o, n in zip(df["observation"].tolist(), df["next_observation"].tolist(), strict=True)
    ]
    nxt = _stack(next_list, "next_observation", (obs.shape[1],))
    act = _stack(df["action"].tolist(), "action", (spec.action.flat_size,))
    rewards = df[reward_cols].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(rewards)):
        raise EvaluationInputError(f"reward columns {reward_cols} must be finite (no nulls)")
    session = df["session_id"].astype(str).to_numpy()
    session_idx = np.cumsum(np.r_[True, session[1:] != session[:-1]]) - 1
    return Transitions(
        observation=obs,
        action=act,
        rewards=rewards,
        next_observation=nxt,
        done=df["done"].astype(bool).to_numpy(dtype=np.float64),
        propensity=df["propensity"].to_numpy(dtype=np.float64, na_value=np.nan),
        log_density=df["log_density"].to_numpy(dtype=np.float64, na_value=np.nan),
        session=session_idx.astype(np.int64),
        signals=spec.signal_names,
    )


# ---------------------------------------------------------------------------
# estimation
# ---------------------------------------------------------------------------
@dataclass
class _PolicyView:
    """What the estimators need from one evaluated policy on the logged rows."""

    target: FloatArray  # (N,) probability or log-density of the logged action
    expected_phi: FloatArray  # (N, F) E_π φ(x, ·) at the logged observation
    next_expected_phi: FloatArray  # (N, F) E_π φ(x', ·)
    log_space: bool
    kernel_log_density: FloatArray | None = None  # (N,) NCIS target density (continuous)


def _policy_view(policy: Any, spec: ProblemSpec, t: Transitions, cfg: EvaluateConfig) -> _PolicyView:
    from training.ope.one_step import kernel_log_density
    from training.ope.reward_models import categorical_expected_features, gaussian_expected_features

    if isinstance(spec.action, BoxAction):
        mean, std = policy.gaussian(t.observation)
        next_mean, next_std = policy.gaussian(t.next_observation)
        lo, hi = spec.action.low, spec.action.high
        # Departure: E_π φ uses the unclipped Gaussian's moments with the mean clipped to the box.
        return _PolicyView(
            target=policy.log_density(t.observation, t.action),
            expected_phi=gaussian_expected_features(t.observation, np.clip(mean, lo, hi), std, _interactions(t)),
            next_expected_phi=gaussian_expected_features(
                t.next_observation, np.clip(next_mean, lo, hi), next_std, _interactions(t)
            ),
            log_space=True,
            kernel_log_density=kernel_log_density(t.action, np.clip(mean, lo, hi), cfg.ncis_bandwidth, lo, hi),
        )
    tables = policy.action_probabilities(t.observation)
    next_tables = policy.action_probabilities(t.next_observation)
    a = np.rint(t.action).astype(np.int64)
    target = np.ones(a.shape[0])
    joint = getattr(policy, "joint_probability", None)
    if joint is not None:  # components chosen jointly (MaRCA's retrieval agent): not a product of marginals
        target = joint(t.observation, t.action)
    else:
        for k, tab in enumerate(tables):
            target = target * tab[np.arange(a.shape[0]), a[:, k]]
    return _PolicyView(
        target=target,
        expected_phi=categorical_expected_features(t.observation, tables),
        next_expected_phi=categorical_expected_features(t.next_observation, next_tables),
        log_space=False,
    )


# Largest observation × action interaction block kept in the continuous reward model (rank's 24 × 18 = 432 fits;
# the 72-wide stage logs would need 1,296 extra features, which costs more than it explains).
_MAX_INTERACTIONS = 512


def _interactions(t: Transitions) -> bool:
    return bool(t.observation.shape[1] * t.action.shape[1] <= _MAX_INTERACTIONS)


def _features(spec: ProblemSpec, t: Transitions) -> FloatArray:
    from training.ope.reward_models import categorical_features, gaussian_features

    if isinstance(spec.action, BoxAction):
        return gaussian_features(t.observation, t.action, _interactions(t))
    nvec = (spec.action.n,) if isinstance(spec.action, DiscreteAction) else spec.action.nvec
    assert isinstance(spec.action, DiscreteAction | MultiDiscreteAction)
    return categorical_features(t.observation, t.action, nvec)


def estimate_policies(
    spec: ProblemSpec, t: Transitions, views: dict[str, _PolicyView], cfg: EvaluateConfig
) -> dict[str, dict[str, Any]]:
    """Every estimator for every policy in `views`; returns {estimator: {policy: Estimate}}."""
    from training.ope.fqe import FQEConfig, fqe
    from training.ope.one_step import CIOptions, direct_method, doubly_robust, ips, ncis, snips, switch_dr
    from training.ope.reward_models import fit_ridge
    from training.ope.sequential import pad_episodes, pdis, sequential_doubly_robust, wpdis

    ci = CIOptions(cfg.ci_method, cfg.confidence, max(cfg.n_bootstrap, 20), cfg.seed)  # type: ignore[arg-type]
    behaviour = t.log_density if isinstance(spec.action, BoxAction) else t.propensity
    phi = _features(spec, t)
    reward_model = fit_ridge(phi, t.rewards, l2=cfg.reward_model_l2)
    q_logged = reward_model.predict(phi)
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, policy: str, est: Any) -> None:
        out.setdefault(name, {})[policy] = est

    sig = t.signals
    discounts = np.array([s.discount for s in spec.signals])
    episode_lengths = np.bincount(t.session)
    run_sequential = cfg.sequential and episode_lengths.max() > 1 and discounts.max() > 0
    if run_sequential:
        mask, (r_ep, b_ep) = pad_episodes(t.session, t.rewards, behaviour)
    for name, v in views.items():
        q_target = reward_model.predict(v.expected_phi)
        ls = v.log_space
        put("dm", name, direct_method(q_target, signals=sig, ci=ci))
        put("ips", name, ips(t.rewards, v.target, behaviour, clip=cfg.clip, signals=sig, log_space=ls, ci=ci))
        put("snips", name, snips(t.rewards, v.target, behaviour, clip=cfg.clip, signals=sig, log_space=ls, ci=ci))
        put(
            "dr",
            name,
            doubly_robust(
                t.rewards, v.target, behaviour, q_logged, q_target, clip=cfg.clip, signals=sig, log_space=ls, ci=ci
            ),
        )
        put(
            "switch_dr",
            name,
            switch_dr(
                t.rewards, v.target, behaviour, q_logged, q_target, tau=cfg.switch_tau, signals=sig, log_space=ls, ci=ci
            ),
        )
        if v.kernel_log_density is not None:
            put("ncis", name, ncis(t.rewards, v.kernel_log_density, behaviour, clip=cfg.ncis_clip, signals=sig, ci=ci))
        if not run_sequential:
            continue
        _, (tp_ep,) = pad_episodes(t.session, v.target)
        if v.log_space:
            tp_ep = np.where(mask, tp_ep, 0.0)
        put("pdis", name, pdis(r_ep, mask, tp_ep, b_ep, discounts, signals=sig, log_space=ls, ci=ci, clip=cfg.clip))
        put("wpdis", name, wpdis(r_ep, mask, tp_ep, b_ep, discounts, signals=sig, log_space=ls, ci=ci, clip=cfg.clip))
        first = np.r_[True, t.session[1:] != t.session[:-1]]
        fqe_est, q_model = fqe(
            phi,
            t.rewards,
            v.next_expected_phi,
            t.done,
            np.minimum(discounts, 0.999),
            v.expected_phi[first],
            t.session,
            t.session[first],
            signals=sig,
            cfg=FQEConfig(n_bootstrap=cfg.fqe_bootstrap, confidence=cfg.confidence, seed=cfg.seed),
        )
        put("fqe", name, fqe_est)
        _, (qf_ep, vf_ep) = pad_episodes(t.session, q_model.predict(phi), q_model.predict(v.expected_phi))
        sdr = sequential_doubly_robust(
            r_ep, mask, tp_ep, b_ep, discounts, qf_ep, vf_ep, signals=sig, log_space=ls, ci=ci, clip=cfg.clip
        )
        put("sequential_dr", name, sdr)
    return out


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------
def run_evaluate(cfg: EvaluateConfig, policy_loader: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Evaluate; write evaluation.{json,md,png} into cfg.output_dir; return the JSON report as a dict.

    `policy_loader(version)` defaults to loading ONNX policies from the registry.
    """
    from models.registry import ModelRegistry
    from training.ope.core import paired_difference
    from training.ope.policies import OnnxPolicy

    spec = get_problem(cfg.problem)
    registry = ModelRegistry(cfg.registry_root)
    load = policy_loader or (lambda version: OnnxPolicy.from_registry(registry, cfg.problem, version))
    t = read_transitions(cfg.dataset, spec, cfg.max_rows)
    candidate, baseline = load(cfg.candidate), load(cfg.baseline)
    log_event(
        log,
        "evaluate.start",
        problem=cfg.problem,
        rows=int(t.rewards.shape[0]),
        candidate=getattr(candidate, "name", cfg.candidate),
        baseline=getattr(baseline, "name", cfg.baseline),
    )
    views = {"candidate": _policy_view(candidate, spec, t, cfg), "baseline": _policy_view(baseline, spec, t, cfg)}
    results = estimate_policies(spec, t, views, cfg)
    estimators: dict[str, Any] = {}
    for name, per_policy in results.items():
        diff = paired_difference(
            per_policy["candidate"],
            per_policy["baseline"],
            ci=cfg.ci_method if name != "fqe" else "normal",  # type: ignore[arg-type]
            confidence=cfg.confidence,
            n_bootstrap=max(cfg.n_bootstrap, 20),
            seed=cfg.seed,
        )
        entry = {
            "kind": "sequential" if name in ("pdis", "wpdis", "sequential_dr", "fqe") else "one_step",
            "candidate": per_policy["candidate"].to_dict(),
            "baseline": per_policy["baseline"].to_dict(),
            "difference": diff.to_dict(),
        }
        if name == "fqe":
            entry["difference"]["warnings"].append(
                "FQE difference interval spans initial states only; it ignores the Q-model's refit uncertainty"
            )
        estimators[name] = entry
    primary = "ncis" if isinstance(spec.action, BoxAction) else "dr"
    main = spec.main_signal
    constraints = []
    for c in spec.constraints:
        s = estimators[primary]["candidate"]["signals"][c.signal]
        constraints.append(
            {
                "signal": c.signal,
                "direction": c.direction,
                "threshold": c.threshold,
                "estimate": s["value"],
                "ci": [s["ci_low"], s["ci_high"]],
                "satisfied": c.satisfied(s["value"]),
            }
        )
    report: dict[str, Any] = {
        "problem": cfg.problem,
        "candidate": getattr(candidate, "name", cfg.candidate),
        "baseline": getattr(baseline, "name", cfg.baseline),
        "dataset": str(cfg.dataset),
        "n_rows": int(t.rewards.shape[0]),
        "n_sessions": int(t.session.max() + 1),
        "signals": list(spec.signal_names),
        "main_signal": main,
        "primary_estimator": primary,
        "confidence": cfg.confidence,
        "ci_method": cfg.ci_method,
        "behaviour_on_policy_mean": dict(zip(spec.signal_names, t.rewards.mean(axis=0).tolist(), strict=True)),
        "estimators": estimators,
        "constraints": constraints,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "evaluation.json").write_text(json.dumps(_finite(report), indent=2, default=float) + "\n")
    (cfg.output_dir / "evaluation.md").write_text(render_markdown(report))
    plot_report(report, cfg.output_dir / "evaluation.png")
    log_event(
        log,
        "evaluate.done",
        problem=cfg.problem,
        output=str(cfg.output_dir),
        main_difference=estimators[primary]["difference"]["signals"][main]["value"],
    )
    return report


def _finite(x: Any) -> Any:
    """NaN/inf → None so the JSON is strict (a standard error is NaN with a single usable row)."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _fmt(s: dict[str, float]) -> str:
    return f"{s['value']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"


def render_markdown(report: dict[str, Any]) -> str:
    main = report["main_signal"]
    conf = report["confidence"]
    lines = [
        f"# Off-policy evaluation: {report['problem']} — {report['candidate']} vs {report['baseline']}",
        "",
        f"{report['n_rows']} logged decisions in {report['n_sessions']} sessions; {conf:.0%} intervals "
        f"({report['ci_method']}); primary estimator **{report['primary_estimator']}**. "
        "One-step estimators give per-decision means; sequential ones the discounted value per session.",
        "",
        f"## Main signal: {main}",
        "",
        "| estimator | kind | candidate | baseline | candidate − baseline | ESS | max weight | clipped | missing propensity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["estimators"].items():
        c, b, d = (e[k]["signals"][main] for k in ("candidate", "baseline", "difference"))
        diag = e["candidate"]["diagnostics"] or {}
        lines.append(
            f"| {name} | {e['kind']} | {_fmt(c)} | {_fmt(b)} | {_fmt(d)} | "
            f"{diag.get('effective_sample_size', float('nan')):.1f} | {diag.get('weight_max', float('nan')):.3g} | "
            f"{diag.get('share_clipped', 0.0):.1%} | {diag.get('share_missing_propensity', 0.0) + diag.get('share_zero_propensity', 0.0):.1%} |"
        )
    lines += [
        "",
        "## Every signal (primary estimator)",
        "",
        "| signal | candidate | baseline | difference | logged mean |",
        "|---|---|---|---|---|",
    ]
    prim = report["estimators"][report["primary_estimator"]]
    for s in report["signals"]:
        c, b, d = (prim[k]["signals"][s] for k in ("candidate", "baseline", "difference"))
        lines.append(
            f"| {s} | {c['value']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}] | {b['value']:.4g} | "
            f"{d['value']:+.4g} [{d['ci_low']:.4g}, {d['ci_high']:.4g}] | {report['behaviour_on_policy_mean'][s]:.4g} |"
        )
    if report["constraints"]:
        lines += [
            "",
            "## Constraints (candidate, primary estimator)",
            "",
            "| signal | rule | estimate | CI | holds |",
            "|---|---|---|---|---|",
        ]
        for c in report["constraints"]:
            lines.append(
                f"| {c['signal']} | {c['direction']} {c['threshold']:g} | {c['estimate']:.4g} | "
                f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}] | {'yes' if c['satisfied'] else 'NO'} |"
            )
    warnings = sorted(
        {w for e in report["estimators"].values() for k in ("candidate", "difference") for w in e[k]["warnings"]}
    )
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


SEQUENTIAL_ESTIMATORS = ("pdis", "wpdis", "sequential_dr", "fqe")


def report_figure(report: dict[str, Any], gate_estimator: str | None = None) -> Any:
    """The evaluation as a matplotlib Figure: per-decision and per-session estimators on separate panels.

    Rows: one-step estimators (value per decision) and, when present, sequential
    ones (value per session, a scale 10–20× larger). Columns: each policy's
    value, and candidate − baseline with its paired CI. The primary estimator
    is drawn as a filled square, the gate's (when known) with a red ring.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.units import per

    main = report["main_signal"]
    groups = [
        ("decision", [n for n in report["estimators"] if n not in SEQUENTIAL_ESTIMATORS]),
        ("session", [n for n in report["estimators"] if n in SEQUENTIAL_ESTIMATORS]),
    ]
    groups = [(unit_of, names) for unit_of, names in groups if names]
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False)
    conf = f"{report['confidence']:.0%} CI"
    for row, (unit_of, names) in enumerate(groups):
        x = np.arange(len(names))
        value_ax, diff_ax = axes[row]
        for offset, who in ((-0.15, "candidate"), (0.15, "baseline")):
            vals = [report["estimators"][n][who]["signals"][main] for n in names]
            v = np.array([s["value"] for s in vals])
            err = np.array([[s["value"] - s["ci_low"] for s in vals], [s["ci_high"] - s["value"] for s in vals]])
            value_ax.errorbar(x + offset, v, yerr=np.maximum(err, 0), fmt="o", capsize=3, label=who)
        d = [report["estimators"][n]["difference"]["signals"][main] for n in names]
        dv = np.array([s["value"] for s in d])
        derr = np.array([[s["value"] - s["ci_low"] for s in d], [s["ci_high"] - s["value"] for s in d]])
        diff_ax.errorbar(x, dv, yerr=np.maximum(derr, 0), fmt="o", capsize=3, color="black", label=conf)
        diff_ax.axhline(0.0, color="grey", lw=0.8)
        for k, n in enumerate(names):
            if n == report["primary_estimator"]:
                diff_ax.plot(x[k], dv[k], "s", color="tab:blue", ms=10, label=f"primary estimator ({n})")
            if n == gate_estimator:
                diff_ax.plot(x[k], dv[k], "o", mfc="none", mec="red", ms=16, mew=2, label=f"gate's estimator ({n})")
        for ax in (value_ax, diff_ax):
            ax.set_xticks(x, names, rotation=30, ha="right")
            ax.set_xlabel("off-policy estimator")
            ax.grid(axis="y", alpha=0.3)
        value_ax.set_ylabel(per(main, unit_of))
        diff_ax.set_ylabel(f"candidate − baseline, {per(main, unit_of)}")
        value_ax.set_title(f"{main} per {unit_of}: each policy's value ({conf})")
        diff_ax.set_title(f"{main} per {unit_of}: candidate − baseline (paired)")
        value_ax.legend(fontsize=8)
        diff_ax.legend(fontsize=8)
    fig.suptitle(
        f"Off-policy evaluation of {report['candidate']} vs {report['baseline']} ({report['problem']})\n"
        f"{report['n_rows']} logged decisions in {report['n_sessions']} sessions, "
        f"evaluated {report.get('created_at', '')[:16].replace('T', ' ')} UTC",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def plot_report(report: dict[str, Any], path: Path, gate_estimator: str | None = None) -> None:
    """`report_figure` → PNG at 110 dpi."""
    import matplotlib.pyplot as plt

    fig = report_figure(report, gate_estimator)
    fig.savefig(path, dpi=110)
    plt.close(fig)
