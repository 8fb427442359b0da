"""The offline gate: ship a candidate only if off-policy evaluation says it beats production and keeps every constraint.

Rule (ARCHITECTURE.md, "gate"): a candidate passes when

1. the lower confidence bound of (candidate − production) on the problem's main
   signal, paired on the same logged rows, is above `min_lift` (0 by default);
2. every constraint of the problem (models/problems.py) holds for the
   candidate's estimate of its signal — the point estimate by default, or the
   pessimistic end of its interval with `constraint_bound="interval"`;
3. the estimate rests on enough data: the effective sample size of the
   candidate's importance weights is at least `min_effective_sample_size`.

It reads the evaluation job's JSON report (pipelines/jobs/evaluate.py) and
writes `gate/gate.json` and `gate/gate.md` into the run folder, pass or fail.
It never deploys anything: the DAG branches on the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.errors import TroupeError
from models.problems import get_problem
from pipelines.jobs.loop import read_done, write_done, write_json

GATE_DIR = "gate"
# Estimators tried, in order, when the config names none: the doubly robust
# family first (the one whose CI coverage the OPE benchmark checks).
PREFERRED_ESTIMATORS: tuple[str, ...] = ("dr", "doubly_robust", "snips", "ncis", "wpdis", "ips", "dm")


class GateInputError(TroupeError):
    """The evaluation report lacks what the gate needs; the message names the missing entry."""


@dataclass(frozen=True)
class GateConfig:
    """How strict the gate is."""

    min_lift: float = 0.0
    """The lower bound of (candidate − production) on the main signal must be strictly above this (signal units)."""
    estimator: str | None = None
    """The OPE estimator whose numbers decide; None = the report's primary one, else the first of PREFERRED_ESTIMATORS."""
    constraint_bound: Literal["estimate", "interval"] = "estimate"
    """Compare constraints with the point estimate, or with the pessimistic end of its confidence interval."""
    min_effective_sample_size: float = 30.0
    """Refuse when the candidate's importance weights leave fewer effective rows than this."""
    waive_constraints: tuple[str, ...] = ()
    """Constraint signals an owner has explicitly waived for this run: still estimated and reported, not enforced."""

    def __post_init__(self) -> None:
        if self.constraint_bound not in ("estimate", "interval"):
            raise ValueError(
                f"GateConfig.constraint_bound: expected 'estimate' or 'interval', got {self.constraint_bound!r}"
            )
        if self.min_effective_sample_size < 0:
            raise ValueError(
                f"GateConfig.min_effective_sample_size: must be >= 0, got {self.min_effective_sample_size}"
            )
        if self.min_lift != self.min_lift:  # NaN
            raise ValueError("GateConfig.min_lift: must be a number, got NaN")
        if isinstance(self.waive_constraints, str):
            raise ValueError("GateConfig.waive_constraints: expected a list of signal names, got a string")
        object.__setattr__(self, "waive_constraints", tuple(self.waive_constraints))


@dataclass(frozen=True)
class SignalEstimate:
    """One signal's off-policy numbers for the candidate and for the candidate − production difference."""

    candidate: float
    candidate_ci: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]
    production: float | None = None


@dataclass(frozen=True)
class GateInputs:
    """What the gate reads from an evaluation, independent of the report's layout."""

    estimator: str
    confidence: float
    signals: dict[str, SignalEstimate]
    effective_sample_size: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConstraintCheck:
    signal: str
    direction: str
    threshold: float
    value: float
    satisfied: bool
    waived: bool = False


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    problem: str
    main_signal: str
    estimator: str
    confidence: float
    main: SignalEstimate
    constraints: list[ConstraintCheck] = field(default_factory=list)
    effective_sample_size: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(problem: str, inputs: GateInputs, cfg: GateConfig) -> GateDecision:
    """Apply the gate's rule to one evaluation (pure: no files)."""
    spec = get_problem(problem)
    main_name = spec.main_signal
    if main_name not in inputs.signals:
        raise GateInputError(
            f"the evaluation has no estimate of the main signal {main_name!r}; it has {sorted(inputs.signals)}"
        )
    main = inputs.signals[main_name]
    reasons: list[str] = []
    lower = main.difference_ci[0]
    if not lower > cfg.min_lift:
        reasons.append(
            f"{main_name}: lower bound of candidate − production is {lower:.4g} "
            f"(estimate {main.difference:+.4g}, {inputs.confidence:.0%} CI [{main.difference_ci[0]:.4g}, "
            f"{main.difference_ci[1]:.4g}]), not above {cfg.min_lift:g}"
        )
    checks: list[ConstraintCheck] = []
    unknown = sorted(set(cfg.waive_constraints) - {c.signal for c in spec.constraints})
    if unknown:
        raise ValueError(
            f"GateConfig.waive_constraints: {unknown} are not constraints of {problem}; "
            f"its constraints: {[c.signal for c in spec.constraints]}"
        )
    for c in spec.constraints:
        if c.signal not in inputs.signals:
            raise GateInputError(f"the evaluation has no estimate of {c.signal!r}, which a {problem} constraint needs")
        est = inputs.signals[c.signal]
        if cfg.constraint_bound == "estimate":
            value = est.candidate
        else:  # the pessimistic end: the lower bound for '>=', the upper bound for '<='
            value = est.candidate_ci[0] if c.direction == ">=" else est.candidate_ci[1]
        ok = c.satisfied(value)
        waived = c.signal in cfg.waive_constraints
        checks.append(ConstraintCheck(c.signal, c.direction, c.threshold, value, ok, waived))
        if not ok and not waived:
            reasons.append(
                f"constraint {c.signal} {c.direction} {c.threshold:g} violated: candidate estimate {value:.4g}"
            )
    ess = inputs.effective_sample_size
    if ess is not None and ess < cfg.min_effective_sample_size:
        reasons.append(
            f"effective sample size {ess:.1f} is below {cfg.min_effective_sample_size:g}: too little overlap "
            f"between the candidate and the logging policy to trust the estimate"
        )
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        problem=problem,
        main_signal=main_name,
        estimator=inputs.estimator,
        confidence=inputs.confidence,
        main=main,
        constraints=checks,
        effective_sample_size=ess,
        config=asdict(cfg),
        warnings=list(inputs.warnings),
    )


# ---------------------------------------------------------------------------
# reading the evaluation report
# ---------------------------------------------------------------------------
def _ci(d: Mapping[str, Any], where: str) -> tuple[float, float]:
    try:
        return float(d["ci_low"]), float(d["ci_high"])
    except KeyError as err:
        raise GateInputError(f"{where}: missing {err.args[0]!r}") from None


def inputs_from_report(report: Mapping[str, Any], estimator: str | None = None) -> GateInputs:
    """Pick one estimator's numbers out of the evaluation job's report.

    Expected layout (pipelines/jobs/evaluate.py): `report["estimators"][name]`
    holds `candidate`, `difference` (candidate − baseline, paired) and
    optionally `baseline`, each an `Estimate.to_dict()` (training/ope/core.py):
    `{"signals": {signal: {"value", "ci_low", "ci_high", ...}}, "confidence",
    "diagnostics": {"effective_sample_size", ...}, "warnings": [...]}`.
    """
    estimators = report.get("estimators")
    if not isinstance(estimators, Mapping) or not estimators:
        raise GateInputError("the evaluation report has no 'estimators' section; re-run the evaluate step")
    name = estimator or report.get("primary_estimator")
    if name is None:
        name = next((e for e in PREFERRED_ESTIMATORS if e in estimators), None) or next(iter(estimators))
    if name not in estimators:
        raise GateInputError(f"estimator {name!r} is not in the evaluation report; it has {sorted(estimators)}")
    entry = estimators[name]
    for part in ("candidate", "difference"):
        if part not in entry:
            raise GateInputError(f"estimators.{name} has no {part!r} entry; it has {sorted(entry)}")
    cand, diff, base = entry["candidate"], entry["difference"], entry.get("baseline")
    signals: dict[str, SignalEstimate] = {}
    for sig, c in cand["signals"].items():
        d = diff["signals"].get(sig)
        if d is None:
            raise GateInputError(f"estimators.{name}.difference has no signal {sig!r}")
        signals[sig] = SignalEstimate(
            candidate=float(c["value"]),
            candidate_ci=_ci(c, f"estimators.{name}.candidate.{sig}"),
            difference=float(d["value"]),
            difference_ci=_ci(d, f"estimators.{name}.difference.{sig}"),
            production=float(base["signals"][sig]["value"]) if base and sig in base.get("signals", {}) else None,
        )
    diagnostics = cand.get("diagnostics") or {}
    ess = diagnostics.get("effective_sample_size")
    return GateInputs(
        estimator=str(name),
        confidence=float(cand.get("confidence", diff.get("confidence", 0.95))),
        signals=signals,
        effective_sample_size=float(ess) if ess is not None else None,
        warnings=tuple(str(w) for w in (*cand.get("warnings", ()), *diff.get("warnings", ()))),
    )


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------
def render_markdown(d: GateDecision) -> str:
    verdict = "PASSED" if d.passed else "REFUSED"
    lines = [
        f"# Gate: {d.problem} candidate {verdict}",
        "",
        f"Estimator `{d.estimator}`, {d.confidence:.0%} confidence intervals.",
        "",
        "| check | value | rule | ok |",
        "|---|---|---|---|",
        f"| {d.main_signal} lift (candidate − production) | {d.main.difference:+.4g} "
        f"[{d.main.difference_ci[0]:.4g}, {d.main.difference_ci[1]:.4g}] | lower bound > {d.config['min_lift']:g} "
        f"| {'yes' if d.main.difference_ci[0] > d.config['min_lift'] else 'no'} |",
    ]
    for c in d.constraints:
        lines.append(
            f"| {c.signal} (constraint) | {c.value:.4g} | {c.direction} {c.threshold:g} "
            f"| {'yes' if c.satisfied else 'no'}{' (waived)' if c.waived else ''} |"
        )
    if d.effective_sample_size is not None:
        ok = d.effective_sample_size >= d.config["min_effective_sample_size"]
        lines.append(
            f"| effective sample size | {d.effective_sample_size:.1f} | >= {d.config['min_effective_sample_size']:g} "
            f"| {'yes' if ok else 'no'} |"
        )
    if d.reasons:
        lines += ["", "Refused because:", *(f"- {r}" for r in d.reasons)]
    waived = [c.signal for c in d.constraints if c.waived]
    if waived:
        lines += ["", f"Waived for this run (estimated, not enforced): {', '.join(waived)}"]
    if d.warnings:
        lines += ["", "Evaluation warnings:", *(f"- {w}" for w in d.warnings)]
    return "\n".join(lines) + "\n"


def run_gate(
    problem: str, evaluation_report: str | Path, run_dir: str | Path, cfg: GateConfig | None = None
) -> dict[str, Any]:
    """Gate one candidate; writes `<run_dir>/gate/gate.{json,md,png}` and returns {passed, reasons, report}.

    Idempotent for the run: a finished gate returns its recorded decision
    unless the config differs (then it decides again and overwrites).
    """
    cfg = cfg or GateConfig()
    out_dir = Path(run_dir) / GATE_DIR
    config = json.loads(json.dumps(asdict(cfg)))  # as recorded (tuples become lists)
    done = read_done(out_dir)
    if done is not None and done.get("config") == config:
        return done
    path = Path(evaluation_report)
    if not path.is_file():
        raise GateInputError(f"evaluation report {path} does not exist; run the evaluate step first")
    report = json.loads(path.read_text())
    decision = decide(problem, inputs_from_report(report, cfg.estimator), cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "gate.json", decision.to_dict())
    (out_dir / "gate.md").write_text(render_markdown(decision))
    if "n_sessions" in report:  # a full evaluation report: the evaluation plot with the gate's estimator marked
        from pipelines.jobs.evaluate import plot_report

        plot_report(report, out_dir / "gate.png", gate_estimator=decision.estimator)
    return write_done(
        out_dir,
        {
            "passed": decision.passed,
            "reasons": decision.reasons,
            "report": str(out_dir / "gate.json"),
            "markdown": str(out_dir / "gate.md"),
            "config": config,
        },
    )


def read_gate_report(run_dir: str | Path) -> dict[str, Any]:
    """The gate's decision for a run (gate.json), as written by `run_gate`."""
    path = Path(run_dir) / GATE_DIR / "gate.json"
    if not path.is_file():
        raise GateInputError(f"{path} does not exist; the gate has not run for this interval")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise GateInputError(f"{path} is not a JSON object")
    return data
