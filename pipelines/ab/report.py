"""The A/B report over DataFrames: decisions ⋈ feedback → per-user units → per-arm metrics, lifts, SRM, CUPED, mSPRT.

Works on any pandas frames with the columns below, independent of how the logs
are stored (pipelines/jobs/ab_report.py is the thin loader over the lake):

    decisions: request_id, timestamp (UTC), user_id, experiment, arm, exposed
    feedback:  request_id, timestamp (UTC), user_id, and one numeric column per signal

The unit of randomisation — and so of every variance — is the user. Metrics:

* per-decision mean of each signal per arm: Σ signal / Σ decisions over users,
  a ratio metric with a delta-method CI; its relative lift vs control;
* per-user total of each signal: plain mean, with and without CUPED
  (covariate: the user's total of the same signal in the pre-period);
* an mSPRT always-valid p-value per daily look on the per-user totals, so the
  report can be read every day without inflating false positives;
* the sample-ratio-mismatch χ² test of users per arm against the weights.

Verdicts (ours: the report's decision rule, stated before any data is read).
The PRE-REGISTERED PRIMARY TEST of every metric is the two-sided test of the
per-decision mean, users as units (delta method), at the report's confidence
level. It alone gives the verdicts:

* the main signal (the goal metric): treatment − control "better", "worse" or
  "no detectable difference";
* each signal the problem constrains (models/problems.py: click ≥ 1.9 per
  request, live_exposure ≤ 0.25, …) is a guardrail on the treatment arm: FAIL
  when its confidence interval lies wholly on the wrong side of the threshold
  (a significant violation), PASS otherwise — the change vs control is shown
  next to it;
* every other signal is secondary: "higher", "lower" or "no detectable
  difference" vs control, without pass/fail;
* an SRM alert voids every verdict ("invalid: sample ratio mismatch").

CUPED (per-user totals adjusted by the pre-period) and the mSPRT sequential
test are printed as what they are — a variance-reduced estimate of a different
quantity (per-user totals) and an always-valid p-value for daily peeking — and
never change a verdict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.ab.stats import (
    ABInputError,
    cuped_lift,
    lift,
    mean_ci,
    ratio_ci,
    sequential_test,
    srm_test,
)

DECISION_COLUMNS = ("request_id", "timestamp", "user_id", "experiment", "arm", "exposed")
PRIMARY_TEST = "per-decision mean, users as units (delta method), two-sided"


def verdicts(
    report: Mapping[str, Any], main_signal: str, constraints: Sequence[Any] = ()
) -> dict[str, dict[str, dict[str, Any]]]:
    """signal → treatment arm → {role, verdict, lift, p, …}; the rule is in the module docstring.

    `constraints`: the problem's Constraint objects (signal, direction, threshold).
    """
    alpha = 1.0 - float(report["confidence"])
    srm_alert = bool(report["srm"]["alert"])
    limits = {c.signal: c for c in constraints}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for signal, entry in report["signals"].items():
        role = "goal" if signal == main_signal else "guardrail" if signal in limits else "secondary"
        out[signal] = {}
        for arm, cmp in entry["vs_control"].items():
            primary = cmp["per_decision"]
            diff, p = primary["absolute"]["value"], primary["p_value"]
            significant = p < alpha
            row: dict[str, Any] = {"role": role, "relative": primary["relative"], "absolute": primary["absolute"],
                                   "p_value": p}  # fmt: skip
            violated = False
            if role == "guardrail":
                c = limits[signal]
                mean = entry["arms"][arm]["per_decision"]
                violated = mean["ci_high"] < c.threshold if c.direction == ">=" else mean["ci_low"] > c.threshold
                row |= {"constraint": f"{c.direction} {c.threshold:g}", "treatment_mean": mean}
            if srm_alert:
                verdict = "invalid: sample ratio mismatch"
            elif role == "guardrail":
                verdict = "FAIL" if violated else "PASS"
            elif not significant:
                verdict = "no detectable difference"
            elif role == "goal":
                verdict = "better" if diff > 0 else "worse"
            else:
                verdict = "higher" if diff > 0 else "lower"
            out[signal][arm] = {**row, "verdict": verdict}
    return out


def overall_decision(verdict_table: Mapping[str, Mapping[str, Mapping[str, Any]]], arm: str) -> str:
    """One sentence per treatment arm from the verdicts (goal better and every guardrail PASS = ship)."""
    rows = {s: v[arm] for s, v in verdict_table.items() if arm in v}
    if any(r["verdict"].startswith("invalid") for r in rows.values()):
        return f"{arm}: no decision — the sample ratio mismatch must be explained first"
    goal = next((r["verdict"] for r in rows.values() if r["role"] == "goal"), "no detectable difference")
    failed = sorted(s for s, r in rows.items() if r["verdict"] == "FAIL")
    if goal == "better" and not failed:
        return f"{arm}: ship — the goal metric improved and every guardrail passed"
    if goal == "better":
        return f"{arm}: do not ship yet — the goal metric improved but guardrails failed: {', '.join(failed)}"
    if goal == "worse":
        return f"{arm}: do not ship — the goal metric got worse"
    return f"{arm}: no decision — no detectable difference on the goal metric" + (
        f"; guardrails failed: {', '.join(failed)}" if failed else ""
    )


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ABInputError(what, f"missing columns {missing}; expected at least {list(columns)}")


def experiment_decisions(
    decisions: pd.DataFrame,
    feedback: pd.DataFrame,
    experiment: str,
    signals: Sequence[str],
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pd.DataFrame:
    """One row per exposed decision of `experiment` in [start, end) with its summed feedback signals.

    Decisions without feedback count with signals 0 (FeedbackEvent: missing signals are 0).
    """
    _require(decisions, DECISION_COLUMNS, "decisions")
    _require(feedback, ["request_id", *signals], "feedback")
    d = decisions[(decisions["experiment"] == experiment) & decisions["exposed"].astype(bool)]
    if start is not None:
        d = d[d["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        d = d[d["timestamp"] < pd.Timestamp(end)]
    if d.empty:
        raise ABInputError("experiment", f"no exposed decisions of experiment {experiment!r} in the interval")
    if d["arm"].isna().any():
        raise ABInputError("decisions.arm", f"{int(d['arm'].isna().sum())} decisions of {experiment!r} carry no arm")
    fb = feedback[feedback["request_id"].isin(d["request_id"])].groupby("request_id")[list(signals)].sum()
    out = d[["request_id", "timestamp", "user_id", "arm"]].merge(fb, left_on="request_id", right_index=True, how="left")
    out[list(signals)] = out[list(signals)].fillna(0.0)
    out["day"] = out["timestamp"].dt.floor("D")
    return out.reset_index(drop=True)


def pre_period_totals(feedback: pd.DataFrame, signals: Sequence[str], before: dt.datetime, days: float) -> pd.DataFrame:
    """Per-user totals of each signal in [before − days, before): the CUPED covariate, indexed by user_id."""
    _require(feedback, ["user_id", "timestamp", *signals], "feedback")
    lo = pd.Timestamp(before) - pd.Timedelta(days=days)
    f = feedback[(feedback["timestamp"] >= lo) & (feedback["timestamp"] < pd.Timestamp(before))]
    return f.groupby("user_id")[list(signals)].sum()


def analyse(
    rows: pd.DataFrame,
    signals: Sequence[str],
    weights: Mapping[str, float],
    control: str,
    pre: pd.DataFrame | None = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The whole report as a dict from per-decision rows (see `experiment_decisions`)."""
    if control not in weights:
        raise ABInputError("control", f"control arm {control!r} is not among the configured arms {sorted(weights)}")
    arms_per_user = rows.groupby("user_id")["arm"].nunique()
    crossed = arms_per_user[arms_per_user > 1].index
    warnings: list[str] = []
    if len(crossed):
        # Assignment is deterministic per user; a user in two arms means weights changed mid-test.
        warnings.append(f"{len(crossed)} users saw more than one arm; they are counted in the first arm they saw")
    first_arm = rows.sort_values("timestamp").groupby("user_id")["arm"].first()
    rows = rows.assign(arm=rows["user_id"].map(first_arm))
    units = rows.groupby("user_id").agg(
        arm=("arm", "first"), decisions=("request_id", "size"), **{s: (s, "sum") for s in signals}
    )
    if pre is not None:
        covariate = pre.reindex(units.index).fillna(0.0)
        for s in signals:
            units[f"pre_{s}"] = covariate.get(s, 0.0)
    counts = units["arm"].value_counts().to_dict()
    srm = srm_test({str(k): int(v) for k, v in counts.items()}, weights)
    if srm.alert:
        warnings.append(
            f"sample ratio mismatch (p = {srm.p_value:.2g} < 0.001): do not read the lifts until it is explained"
        )
    arms = [a for a in weights if a in counts]
    treatments = [a for a in arms if a != control]
    if control not in counts:
        raise ABInputError("control", f"control arm {control!r} has no units in the interval")
    days = sorted(rows["day"].unique())
    per_signal: dict[str, Any] = {}
    for s in signals:
        arm_stats = {}
        for a in arms:
            u = units[units["arm"] == a]
            if len(u) < 2:
                continue
            arm_stats[a] = {
                "per_decision": ratio_ci(u[s], u["decisions"], confidence).to_dict(),
                "per_user": mean_ci(u[s], confidence).to_dict(),
            }
        comparisons = {}
        c_units = units[units["arm"] == control]
        for a in treatments:
            if a not in arm_stats or control not in arm_stats:
                continue
            t_units = units[units["arm"] == a]
            entry: dict[str, Any] = {
                "per_decision": lift(
                    ratio_ci(t_units[s], t_units["decisions"], confidence),
                    ratio_ci(c_units[s], c_units["decisions"], confidence),
                    confidence,
                ).to_dict(),
                "per_user": lift(
                    mean_ci(t_units[s], confidence), mean_ci(c_units[s], confidence), confidence
                ).to_dict(),
            }
            if pre is not None and units[f"pre_{s}"].var() > 0:
                adjusted, theta = cuped_lift(
                    t_units[s], t_units[f"pre_{s}"], c_units[s], c_units[f"pre_{s}"], confidence
                )
                plain = entry["per_user"]["absolute"]
                entry["per_user_cuped"] = {
                    **adjusted.to_dict(),
                    "theta": theta,
                    "ci_width_ratio": _width(adjusted.absolute.to_dict()) / _width(plain)
                    if _width(plain) > 0
                    else None,
                }
            entry["sequential"] = _sequential(rows, s, a, control, days, alpha)
            comparisons[a] = entry
        per_signal[s] = {"arms": arm_stats, "vs_control": comparisons}
    return {
        "control": control,
        "arms": arms,
        "weights": dict(weights),
        "units_per_arm": {a: int(counts.get(a, 0)) for a in weights},
        "decisions_per_arm": {a: int(units.loc[units["arm"] == a, "decisions"].sum()) for a in weights},
        "days": [pd.Timestamp(d).date().isoformat() for d in days],
        "srm": srm.to_dict(),
        "signals": per_signal,
        "confidence": confidence,
        "sequential_alpha": alpha,
        "warnings": warnings,
    }


def _width(interval: Mapping[str, float]) -> float:
    return float(interval["ci_high"] - interval["ci_low"])


def _sequential(
    rows: pd.DataFrame, signal: str, arm: str, control: str, days: Sequence[Any], alpha: float
) -> dict[str, Any]:
    """mSPRT on per-user totals at each daily look (cumulative up to and including that day)."""
    t_looks, c_looks, used_days = [], [], []
    for day in days:
        upto = rows[rows["day"] <= day]
        totals = upto.groupby(["user_id", "arm"])[signal].sum().reset_index()
        t = totals.loc[totals["arm"] == arm, signal].to_numpy(dtype=float)
        c = totals.loc[totals["arm"] == control, signal].to_numpy(dtype=float)
        if t.size >= 2 and c.size >= 2:
            t_looks.append(t)
            c_looks.append(c)
            used_days.append(pd.Timestamp(day).date().isoformat())
    if not t_looks:
        return {"looks": [], "p_values": [], "rejected": False, "note": "too few units for a look"}
    res = sequential_test(t_looks, c_looks, alpha=alpha).to_dict()
    res["days"] = used_days
    return res


def _pct(iv: Mapping[str, float]) -> str:
    if iv["value"] != iv["value"]:  # NaN: the control mean is 0
        return "— (control mean 0)"
    return f"{100 * iv['value']:+.2f} % [{100 * iv['ci_low']:+.2f}, {100 * iv['ci_high']:+.2f}]"


def render_markdown(report: Mapping[str, Any]) -> str:
    conf = report["confidence"]
    srm = report["srm"]
    lines = [
        f"# A/B report: {report['experiment']}",
        "",
        f"Interval {report.get('start') or '…'} → {report.get('end') or '…'}; control arm **{report['control']}**; "
        f"{conf:.0%} intervals; units are users.",
        "",
        "## Verdict",
        "",
        f"Pre-registered primary test, the only one that decides: {report.get('primary_test', PRIMARY_TEST)}, "
        f"α = {1 - conf:.2g}. Lifts are relative to control, in %.",
        "",
    ]
    for arm, sentence in report.get("decision", {}).items():
        lines.append(f"**{sentence}.**" if arm else sentence)
    lines += [
        "",
        "| metric | role | arm | lift per decision (primary) | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for s, per_arm in report.get("verdicts", {}).items():
        for a, v in per_arm.items():
            role = {"goal": "goal", "secondary": "secondary"}.get(
                v["role"], f"guardrail ({s} {v.get('constraint', '')} per decision)"
            )
            verdict = v["verdict"]
            if v["role"] == "guardrail":
                m = v["treatment_mean"]
                verdict += f" ({a}: {m['value']:.4g} [{m['ci_low']:.4g}, {m['ci_high']:.4g}])"
            lines.append(f"| {s} | {role} | {a} | {_pct(v['relative'])} | {v['p_value']:.3g} | {verdict} |")
    lines += [
        "",
        "## Sample ratio (SRM)",
        "",
        "| arm | weight | users | decisions |",
        "|---|---|---|---|",
    ]
    for a, w in report["weights"].items():
        lines.append(f"| {a} | {w:g} | {report['units_per_arm'][a]} | {report['decisions_per_arm'][a]} |")
    lines += [
        "",
        f"SRM χ² = {srm['chi2']:.2f}, p = {srm['p_value']:.3g} → "
        f"{'**ALERT: sample ratio mismatch — every verdict above is void**' if srm['alert'] else 'no mismatch'}",
        "",
        "## Per-arm means (per decision)",
        "",
        "| signal | arm | mean per decision |",
        "|---|---|---|",
    ]
    for s, entry in report["signals"].items():
        for a, st in entry["arms"].items():
            m = st["per_decision"]
            lines.append(f"| {s} | {a} | {m['value']:.4g} [{m['ci_low']:.4g}, {m['ci_high']:.4g}] |")
    lines += [
        "",
        "## Supporting analyses (they do not change the verdict)",
        "",
        "CUPED: the difference of per-user *totals* (not per-decision means), adjusted by each user's pre-period "
        "total of the same signal — a variance-reduced estimate of a different quantity; 'CI ×' is its width "
        "relative to the unadjusted per-user CI. Sequential: the mSPRT always-valid p-value on per-user totals at "
        "the last daily look — valid under daily peeking, for monitoring; it is not the fixed-horizon primary test.",
        "",
        "| signal | arm | CUPED Δ per-user total | sequential (mSPRT) always-valid p |",
        "|---|---|---|---|",
    ]
    for s, entry in report["signals"].items():
        for a, cmp in entry["vs_control"].items():
            cu = cmp.get("per_user_cuped")
            cuped_txt = (
                f"{cu['absolute']['value']:+.4g} [{cu['absolute']['ci_low']:+.4g}, {cu['absolute']['ci_high']:+.4g}]"
                f" (CI ×{cu['ci_width_ratio']:.2f})"
                if cu and cu.get("ci_width_ratio")
                else "— (no pre-period)"
            )
            ps = cmp["sequential"]["p_values"]
            p_txt = (f"{ps[-1]:.3g}" + (" (crossed α)" if cmp["sequential"]["rejected"] else "")) if ps else "—"
            lines.append(f"| {s} | {a} | {cuped_txt} | {p_txt} |")
    if report["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in report["warnings"])]
    return "\n".join(lines) + "\n"


def report_figure(report: Mapping[str, Any], main_signal: str) -> Any:
    """Left: relative lift per decision of every signal, in %, with its CI and verdict; right: the main
    signal's always-valid (mSPRT) p-value at each daily look against α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lift_ax, seq_ax) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    sigs = list(report["signals"])
    treatments = [x for x in report["arms"] if x != report["control"]]
    for k, a in enumerate(treatments):
        ys = np.arange(len(sigs)) + 0.2 * k
        for y, s in zip(ys, sigs, strict=True):
            v = report["signals"][s]["vs_control"].get(a, {}).get("per_decision", {}).get("relative")
            if not v or v["value"] != v["value"]:
                lift_ax.annotate("no lift: control mean 0", (0, y), xytext=(4, 0), textcoords="offset points",
                                 va="center", fontsize=7, color="grey")  # fmt: skip
                continue
            lo, mid, hi = 100 * v["ci_low"], 100 * v["value"], 100 * v["ci_high"]
            lift_ax.errorbar(mid, y, xerr=[[mid - lo], [hi - mid]], fmt="o", capsize=3, color=f"C{k}",
                             label=a if y == ys[0] else None)  # fmt: skip
            verdict = report.get("verdicts", {}).get(s, {}).get(a, {}).get("verdict")
            if verdict:
                lift_ax.annotate(verdict, (hi, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
        seq = report["signals"].get(main_signal, {}).get("vs_control", {}).get(a, {}).get("sequential", {})
        if seq.get("p_values"):
            days = seq.get("days") or [str(i + 1) for i in range(len(seq["p_values"]))]
            seq_ax.plot(days, seq["p_values"], marker="o", ms=7, label=f"{a} vs {report['control']}", color=f"C{k}")
            if len(days) == 1:
                seq_ax.annotate("one daily look so far", (days[0], seq["p_values"][0]), xytext=(8, 8),
                                textcoords="offset points", fontsize=8)  # fmt: skip
    lift_ax.axvline(0, color="grey", lw=0.8)
    lift_ax.set_yticks(np.arange(len(sigs)), sigs)
    lift_ax.set_xlabel(f"relative lift per decision vs {report['control']} (%), {report['confidence']:.0%} CI")
    lift_ax.set_ylabel("signal (per decision)")
    lift_ax.set_title("Primary test per metric: lift and verdict")
    lift_ax.legend(fontsize=8)
    seq_ax.axhline(
        report["sequential_alpha"], color="red", lw=0.8, ls="--", label=f"α = {report['sequential_alpha']:g}"
    )
    seq_ax.set_yscale("log")
    seq_ax.set_ylim(top=1.5)
    seq_ax.set_xlabel("daily look (UTC date)")
    seq_ax.set_ylabel("always-valid p-value (probability, log scale)")
    seq_ax.set_title(f"{main_signal}: mSPRT always-valid p-value\n(sequential monitoring, not the verdict)")
    seq_ax.tick_params(axis="x", labelrotation=30)
    seq_ax.legend(fontsize=8)
    start, end = (str(report.get(k) or "…")[:16].replace("T", " ") for k in ("start", "end"))
    fig.suptitle(f"A/B test {report['experiment']}: decisions {start} → {end} UTC", fontsize=11)
    fig.tight_layout()
    return fig


def plot(report: Mapping[str, Any], path: Path, main_signal: str) -> None:
    """`report_figure` → PNG at 110 dpi."""
    import matplotlib.pyplot as plt

    fig = report_figure(report, main_signal)
    fig.savefig(path, dpi=110)
    plt.close(fig)
