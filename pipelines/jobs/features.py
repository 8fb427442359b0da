"""Features: lake → hourly aggregates → Feast offline Parquet sources → apply / materialize to the online store.

The Feast repo used at run time lives in `<TROUPE_HOME>/feature_repo/`
(feature_store.yaml rendered from feature_store/feature_store.yaml, the file
registry, the SQLite online store); the source tree holds declarations only.

Aggregation. Every key (user, video, live stream, stage) gets one row per hour
it was active, stamped with the *end* of that hour; the row's 1-day and 7-day
values cover the events before that instant. A point-in-time join for an event
at t therefore only sees hours that ended by t (never the event's own hour).
Between active hours a key keeps its last row, up to the view's TTL
(departure from an exact sliding window, in exchange for one row per active
hour instead of one per hour of the calendar).

Units: a *request* is one request_id with feedback. User rates come from the
feedback of `rate_problems` (rank by default: rank, slot and allocate
feedback for one page would otherwise count its watch time several times),
live affinity and the live sequence from `live_problems` (slot); feedback
without a problem counts for both. The live sequence of a user row is the
user's last `SLOT_LIVE_SEQUENCE_LENGTH` live exposures (requests whose feedback
has live_exposure) before the row's instant, most recent first, as flat pairs
(live watch seconds, Unix time of the request's first feedback); (0, 0) pads
it. Times, not ages: a row is served for up to the view's TTL after it was
written, so serving turns them into ages at decision time. Video stats attribute a rank request's watch time and clicks to
every video of its final ordering (`candidate_ids`), a request-level
approximation: feedback carries no per-item signals. Live-stream stats read
slot decisions whose action shows the live stream `candidate_ids[0]`. Stage
stats read allocate decisions: units are channels switched on (retrieval) or
the chosen queue length (pre_rank, rank); compute cost is the request's total.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.events import DecisionEvent, FeedbackEvent
from models.logging import log_event
from models.problems import (
    ALLOCATE_QUEUE_LENGTHS_PRE_RANK,
    ALLOCATE_QUEUE_LENGTHS_RANK,
    FEEDBACK_SIGNALS,
    SLOT_LIVE_SEQUENCE_LENGTH,
)
from models.settings import TroupeSettings
from pipelines.jobs.ingest import read_committed

log = logging.getLogger("troupe.features")

RATE_SIGNALS = ("click", "like", "follow", "comment", "share")
_TEMPLATE = Path(__file__).resolve().parents[2] / "feature_store" / "feature_store.yaml"


@dataclass(frozen=True)
class FeaturesConfig:
    """Where the lake and the runtime Feast repo are, and which online store to use."""

    data_dir: Path
    """Project data folder (lake in `<data_dir>/lake`, offline sources in `<data_dir>/features`)."""
    repo_dir: Path
    """Runtime Feast repo: feature_store.yaml, registry.db, online_store.db. Under TROUPE_HOME."""
    project: str = "troupe"
    """Feast project name (letters, digits, underscores)."""
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    """Used when online_store='redis': `host:port[,db=N,...]`."""
    decisions_topic: str = "troupe.decisions.v1"
    feedback_topic: str = "troupe.feedback.v1"
    rate_problems: tuple[str, ...] = ("rank",)
    """Feedback of these problems (and without a problem) makes the user watch-time and interaction rates."""
    live_problems: tuple[str, ...] = ("slot",)
    """Feedback of these problems (and without a problem) makes the user's live affinity."""
    low_activity_below: float = 5.0
    """Requests per day (7-day mean) below which a user is in the low activity group (0)."""
    high_activity_from: float = 20.0
    """Requests per day (7-day mean) from which a user is in the high activity group (2); medium (1) between."""

    def __post_init__(self) -> None:
        if not self.project.replace("_", "").isalnum():
            raise ValueError(f"FeaturesConfig.project: letters, digits and underscores only, got {self.project!r}")
        if self.online_store not in ("sqlite", "redis"):
            raise ValueError(f"FeaturesConfig.online_store: expected 'sqlite' or 'redis', got {self.online_store!r}")
        if not 0 < self.low_activity_below < self.high_activity_from:
            raise ValueError(
                "FeaturesConfig: expected 0 < low_activity_below < high_activity_from, got "
                f"{self.low_activity_below} and {self.high_activity_from}"
            )

    @classmethod
    def from_settings(cls, settings: TroupeSettings, **overrides: Any) -> FeaturesConfig:
        return cls(
            data_dir=settings.data_dir,
            repo_dir=feature_repo_dir(settings.home),
            decisions_topic=settings.decisions_topic,
            feedback_topic=settings.feedback_topic,
            **overrides,
        )

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"


def feature_repo_dir(home: Path) -> Path:
    """The runtime Feast repo of a TROUPE_HOME (what serving's `feast_repo` setting points at)."""
    return home / "feature_repo"


# ---------------------------------------------------------------------------
# Feast repo
# ---------------------------------------------------------------------------
def write_repo_config(cfg: FeaturesConfig) -> Path:
    """Render feature_store.yaml into the runtime repo; returns the repo folder."""
    cfg.repo_dir.mkdir(parents=True, exist_ok=True)
    if cfg.online_store == "redis":
        online = f"  type: redis\n  connection_string: {json.dumps(cfg.redis_connection_string)}"
    else:
        online = f"  type: sqlite\n  path: {json.dumps(str((cfg.repo_dir / 'online_store.db').resolve()))}"
    text = string.Template(_TEMPLATE.read_text()).substitute(
        project=cfg.project,
        registry_path=json.dumps(str((cfg.repo_dir / "registry.db").resolve())),
        online_store=online,
    )
    (cfg.repo_dir / "feature_store.yaml").write_text(text)
    return cfg.repo_dir


def definitions(cfg: FeaturesConfig) -> tuple[list[Any], dict[str, Any]]:
    """(objects to apply, feature views by name) from the declarations in feature_store/."""
    from feature_store.entities import entities
    from feature_store.feature_services import feature_services
    from feature_store.feature_views import feature_views
    from feature_store.sources import sources

    ents = entities()
    views = feature_views(ents, sources(cfg.features_dir))
    return [*ents.values(), *views.values(), *feature_services(views)], views


def open_store(cfg: FeaturesConfig) -> Any:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(write_repo_config(cfg)))


def apply(cfg: FeaturesConfig) -> Any:
    """`feast apply` of the declarations; source files are created (empty) when missing. Returns the store."""
    objects, _ = definitions(cfg)
    for view, table in _empty_tables().items():
        path = cfg.features_dir / f"{view}.parquet"
        if not path.exists():
            _write(table, path)
    store = open_store(cfg)
    store.apply(objects)
    log_event(log, "features.applied", repo=str(cfg.repo_dir), online_store=cfg.online_store)
    return store


def materialize(
    cfg: FeaturesConfig, start: dt.datetime | None = None, end: dt.datetime | None = None, compute: bool = True
) -> dict[str, int]:
    """Recompute the offline sources from the lake, then materialize into the online store.

    Without `start`, incremental (Feast remembers where the last run ended); `end` defaults to now.
    Returns rows written per offline source.
    """
    rows = compute_features(cfg) if compute else {}
    store = open_store(cfg)
    end = end or dt.datetime.now(dt.UTC)
    if start is None:
        store.materialize_incremental(end_date=end)
    else:
        store.materialize(start_date=start, end_date=end)
    log_event(log, "features.materialized", end=end.isoformat(), **rows)
    return rows


# ---------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------
def compute_features(cfg: FeaturesConfig) -> dict[str, int]:
    """Lake → the four offline source tables under `<data_dir>/features`. Returns rows per table."""
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    per_request = _feedback_per_request(cfg)
    decisions = read_committed(
        cfg.data_dir,
        cfg.decisions_topic,
        DecisionEvent,
        columns=["request_id", "timestamp", "problem", "user_id", "action", "candidate_ids"],
    ).to_pandas()
    tables = {
        "user_stats": _user_stats(cfg, per_request),
        "video_stats": _video_stats(decisions, per_request),
        "live_stream_stats": _live_stats(decisions, per_request),
        "stage_stats": _stage_stats(decisions, per_request),
    }
    out: dict[str, int] = {}
    empty = _empty_tables()
    for view, df in tables.items():
        if df.empty:
            table = empty[view]
        else:
            df = df.assign(created=now)
            table = pa.Table.from_pandas(df, schema=empty[view].schema, preserve_index=False)
        _write(table, cfg.features_dir / f"{view}.parquet")
        out[view] = table.num_rows
    return out


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _empty_tables() -> dict[str, pa.Table]:
    ts = pa.timestamp("us", tz="UTC")
    f64, i64, lst = pa.float64(), pa.int64(), pa.list_(pa.float64())
    user = [("user_id", pa.string()), ("event_timestamp", ts), ("created", ts)]
    user += [("user_activity_group", i64), ("user_recent_rates", lst), ("user_live_affinity", lst)]
    user += [("user_live_sequence", lst)]
    for w in ("1d", "7d"):
        user += [(f"requests_{w}", i64), (f"watch_time_per_request_{w}", f64)]
        user += [(f"{s}_rate_{w}", f64) for s in RATE_SIGNALS]
    schemas = {
        "user_stats": user,
        "video_stats": [
            ("video_id", pa.string()), ("event_timestamp", ts), ("created", ts),
            ("video_impressions_1d", i64), ("video_impressions_7d", i64),
            ("video_watch_time_per_impression_7d", f64), ("video_click_rate_7d", f64),
        ],
        "live_stream_stats": [
            ("live_stream_id", pa.string()), ("event_timestamp", ts), ("created", ts),
            ("live_exposures_1d", i64), ("live_exposures_7d", i64), ("live_watch_time_per_exposure_7d", f64),
        ],
        "stage_stats": [
            ("stage", pa.string()), ("event_timestamp", ts), ("created", ts),
            ("stage_requests_1d", i64), ("stage_units_per_request_1d", f64), ("compute_cost_per_request_1d", f64),
        ],
    }  # fmt: skip
    return {name: pa.schema(fields).empty_table() for name, fields in schemas.items()}


def _feedback_per_request(cfg: FeaturesConfig) -> pd.DataFrame:
    """One row per request_id: user, problem, first feedback time, summed signals (indicators: max)."""
    table = read_committed(
        cfg.data_dir,
        cfg.feedback_topic,
        FeedbackEvent,
        columns=["request_id", "timestamp", "user_id", "problem", "signals"],
    )
    flat = table.flatten().to_pandas()
    flat.columns = [c.removeprefix("signals.") for c in flat.columns]
    # Repeated copies of one feedback event (at-least-once delivery) count once.
    flat = flat.drop_duplicates()
    agg: dict[str, Any] = {"user_id": "first", "problem": "first", "timestamp": "min"}
    agg.update({s: ("max" if s in ("session_end", "live_exposure") else "sum") for s in FEEDBACK_SIGNALS})
    return flat.groupby("request_id", sort=False).agg(agg).reset_index()


def _hourly_rolling(df: pd.DataFrame, key: str, sums: list[str], windows: dict[str, str]) -> pd.DataFrame:
    """Per (key, hour): sums of `sums` over each window ending at the hour's end.

    Returns key, event_timestamp and `<col>_<window>` columns; `df` has key, timestamp and the sum columns.
    """
    if df.empty:
        return pd.DataFrame(columns=[key, "event_timestamp", *(f"{c}_{w}" for w in windows for c in sums)])
    hour_end = df["timestamp"].dt.floor("h") + pd.Timedelta(hours=1)
    hourly = df.assign(event_timestamp=hour_end).groupby([key, "event_timestamp"], sort=True)[sums].sum().reset_index()
    out = hourly[[key, "event_timestamp"]].copy()
    for w, span in windows.items():
        # Groups come out in key order and rows in time order: the order `hourly` is already in.
        rolled = hourly.groupby(key, sort=True).rolling(span, on="event_timestamp")[sums].sum()
        for c in sums:
            out[f"{c}_{w}"] = rolled[c].to_numpy()
    return out


def _safe_div(a: pd.Series, b: pd.Series) -> np.ndarray:
    a_arr, b_arr = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    return np.asarray(np.divide(a_arr, b_arr, out=np.zeros_like(a_arr), where=b_arr > 0))


def _user_stats(cfg: FeaturesConfig, per_request: pd.DataFrame) -> pd.DataFrame:
    windows = {"1d": "1D", "7d": "7D"}
    problem = per_request["problem"]
    rates_src = per_request[problem.isna() | problem.isin(cfg.rate_problems)].assign(requests=1)
    live_src = per_request[problem.isna() | problem.isin(cfg.live_problems)].assign(live_requests=1)
    rates = _hourly_rolling(rates_src, "user_id", ["requests", "watch_time", *RATE_SIGNALS], windows)
    live = _hourly_rolling(live_src, "user_id", ["live_requests", "live_watch_time", "live_exposure"], {"7d": "7D"})
    df = rates.merge(live, on=["user_id", "event_timestamp"], how="outer").sort_values(["user_id", "event_timestamp"])
    # An hour present in only one of the two sources carries the other's last value forward.
    # infer_objects: a source with no rows (e.g. slot-only traffic has no rate rows) leaves object columns of NaN.
    filled = df.groupby("user_id", sort=False).ffill().infer_objects()
    df = pd.concat([df[["user_id"]], filled], axis=1).fillna(0.0)
    out = df[["user_id", "event_timestamp"]].copy()
    for w in windows:
        out[f"requests_{w}"] = df[f"requests_{w}"].astype("int64")
        out[f"watch_time_per_request_{w}"] = _safe_div(df[f"watch_time_{w}"], df[f"requests_{w}"])
        for s in RATE_SIGNALS:
            out[f"{s}_rate_{w}"] = _safe_div(df[f"{s}_{w}"], df[f"requests_{w}"])
    per_day = df["requests_7d"].to_numpy(dtype=float) / 7.0
    out["user_activity_group"] = np.where(
        per_day < cfg.low_activity_below, 0, np.where(per_day < cfg.high_activity_from, 1, 2)
    ).astype("int64")
    recent = np.stack(
        [out["watch_time_per_request_7d"].to_numpy() / 60.0] + [out[f"{s}_rate_7d"].to_numpy() for s in RATE_SIGNALS],
        axis=1,
    )
    out["user_recent_rates"] = list(recent)
    affinity = np.stack(
        [
            _safe_div(df["live_watch_time_7d"], df["live_requests_7d"]) / 60.0,
            _safe_div(df["live_exposure_7d"], df["live_requests_7d"]),
        ],
        axis=1,
    )
    out["user_live_affinity"] = list(affinity)
    exposures = live_src[live_src["live_exposure"] > 0]
    out["user_live_sequence"] = list(_live_sequences(exposures, out, SLOT_LIVE_SEQUENCE_LENGTH))
    return out


def _unix_seconds(ts: pd.Series) -> np.ndarray:
    return np.asarray((ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float))


def _live_sequences(exposures: pd.DataFrame, rows: pd.DataFrame, k: int) -> np.ndarray:
    """(len(rows), 2k): for each (user_id, event_timestamp) row, the user's last k exposures strictly before
    event_timestamp, most recent first, as (live watch seconds, Unix seconds) pairs; (0, 0) pads."""
    out = np.zeros((len(rows), 2 * k))
    if exposures.empty or rows.empty:
        return out
    exposures = exposures.sort_values(["user_id", "timestamp"], kind="stable")
    times, watch = _unix_seconds(exposures["timestamp"]), exposures["live_watch_time"].to_numpy(dtype=float)
    by_user = exposures.groupby("user_id", sort=False).indices
    row_times = _unix_seconds(rows["event_timestamp"])
    for user, at in rows.groupby("user_id", sort=False).indices.items():
        mine = by_user.get(user)
        if mine is None:
            continue
        # An hour's row is stamped with the hour's end: an exposure at that instant belongs to the next hour.
        before = np.searchsorted(times[mine], row_times[at], side="left")
        for j in range(k):
            pos = before - 1 - j
            has = pos >= 0
            out[at[has], 2 * j] = watch[mine[pos[has]]]
            out[at[has], 2 * j + 1] = times[mine[pos[has]]]
    return out


def _explode_items(decisions: pd.DataFrame, problem: str) -> pd.DataFrame:
    d = decisions[(decisions["problem"] == problem) & decisions["candidate_ids"].notna()]
    return d.explode("candidate_ids").dropna(subset=["candidate_ids"]).rename(columns={"candidate_ids": "item"})


def _video_stats(decisions: pd.DataFrame, per_request: pd.DataFrame) -> pd.DataFrame:
    items = _explode_items(decisions, "rank")
    items = items.merge(per_request[["request_id", "watch_time", "click"]], on="request_id", how="left").fillna(
        {"watch_time": 0.0, "click": 0.0}
    )
    items = items.assign(impressions=1).rename(columns={"item": "video_id"})
    agg = _hourly_rolling(items, "video_id", ["impressions", "watch_time", "click"], {"1d": "1D", "7d": "7D"})
    out = agg[["video_id", "event_timestamp"]].copy()
    out["video_impressions_1d"] = agg.get("impressions_1d", pd.Series(dtype=float)).astype("int64")
    out["video_impressions_7d"] = agg.get("impressions_7d", pd.Series(dtype=float)).astype("int64")
    if not agg.empty:
        out["video_watch_time_per_impression_7d"] = _safe_div(agg["watch_time_7d"], agg["impressions_7d"])
        out["video_click_rate_7d"] = _safe_div(agg["click_7d"], agg["impressions_7d"])
    return out


def _live_stats(decisions: pd.DataFrame, per_request: pd.DataFrame) -> pd.DataFrame:
    d = decisions[(decisions["problem"] == "slot") & decisions["candidate_ids"].notna()].copy()
    if not d.empty:
        shown = d["action"].map(lambda a: len(a) > 0 and a[0] > 0)
        first = d["candidate_ids"].map(lambda c: c[0] if len(c) else None)
        d = d.assign(live_stream_id=first)[shown.to_numpy() & first.notna().to_numpy()]
    else:
        d = d.assign(live_stream_id=pd.Series(dtype=str))
    d = d.merge(per_request[["request_id", "live_watch_time"]], on="request_id", how="left").fillna(
        {"live_watch_time": 0.0}
    )
    agg = _hourly_rolling(
        d.assign(exposures=1), "live_stream_id", ["exposures", "live_watch_time"], {"1d": "1D", "7d": "7D"}
    )
    out = agg[["live_stream_id", "event_timestamp"]].copy()
    if not agg.empty:
        out["live_exposures_1d"] = agg["exposures_1d"].astype("int64")
        out["live_exposures_7d"] = agg["exposures_7d"].astype("int64")
        out["live_watch_time_per_exposure_7d"] = _safe_div(agg["live_watch_time_7d"], agg["exposures_7d"])
    return out


def _stage_stats(decisions: pd.DataFrame, per_request: pd.DataFrame) -> pd.DataFrame:
    d = decisions[decisions["problem"] == "allocate"]
    d = d.merge(per_request[["request_id", "compute_cost"]], on="request_id", how="left").fillna({"compute_cost": 0.0})
    frames = []
    if not d.empty:
        actions = np.array(d["action"].tolist(), dtype=float)
        units = {
            "retrieval": actions[:, 0:3].sum(axis=1),
            "pre_rank": np.asarray(ALLOCATE_QUEUE_LENGTHS_PRE_RANK, float)[actions[:, 3].astype(int)],
            "rank": np.asarray(ALLOCATE_QUEUE_LENGTHS_RANK, float)[actions[:, 4].astype(int)],
        }
        for stage, u in units.items():
            frames.append(
                pd.DataFrame(
                    {
                        "stage": stage,
                        "timestamp": d["timestamp"].reset_index(drop=True),
                        "requests": 1,
                        "units": u,
                        "cost": d["compute_cost"].reset_index(drop=True),
                    }
                )
            )
    src = pd.concat(frames) if frames else pd.DataFrame(columns=["stage", "timestamp", "requests", "units", "cost"])
    agg = _hourly_rolling(src, "stage", ["requests", "units", "cost"], {"1d": "1D"})
    out = agg[["stage", "event_timestamp"]].copy()
    if not agg.empty:
        out["stage_requests_1d"] = agg["requests_1d"].astype("int64")
        out["stage_units_per_request_1d"] = _safe_div(agg["units_1d"], agg["requests_1d"])
        out["compute_cost_per_request_1d"] = _safe_div(agg["cost_1d"], agg["requests_1d"])
    return out
