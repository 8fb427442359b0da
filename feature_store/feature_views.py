"""Feast feature views. Declarations only; values are computed by pipelines/jobs/features.py.

The user view carries exactly what serving puts into observations
(models/observations.py): `user_activity_group` (0 low, 1 medium, 2 high),
`user_recent_rates` (7-day mean per request of watch_time/60, click, like,
follow, comment, share), `user_live_affinity` (7-day live watch time per
request / 60, live exposure ratio) and `user_live_sequence` (the last 5 live
exposures, most recent first, as flat (live watch seconds, Unix seconds) pairs,
(0, 0) padding; serving turns the times into ages), plus the scalar 1-day and
7-day rates.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Array, Float64, Int64

RATE_SIGNALS: tuple[str, ...] = ("click", "like", "follow", "comment", "share")
WINDOWS: tuple[str, ...] = ("1d", "7d")

# Snapshots are written each hour a key is active; a key inactive for longer than
# the window has nothing left to say, so the view's TTL is the window length.
USER_TTL = timedelta(days=7)


def user_fields() -> list[Field]:
    fields = [Field(name="user_activity_group", dtype=Int64)]
    fields += [
        Field(name="user_recent_rates", dtype=Array(Float64)),
        Field(name="user_live_affinity", dtype=Array(Float64)),
        Field(name="user_live_sequence", dtype=Array(Float64)),
    ]
    for w in WINDOWS:
        fields.append(Field(name=f"requests_{w}", dtype=Int64))
        fields.append(Field(name=f"watch_time_per_request_{w}", dtype=Float64))
        fields += [Field(name=f"{s}_rate_{w}", dtype=Float64) for s in RATE_SIGNALS]
    return fields


def feature_views(entities: dict[str, Entity], sources: dict[str, FileSource]) -> dict[str, FeatureView]:
    """View name → FeatureView, wired to the given entities and sources."""
    return {
        "user_stats": FeatureView(
            name="user_stats",
            entities=[entities["user"]],
            ttl=USER_TTL,
            schema=user_fields(),
            source=sources["user_stats"],
            online=True,
            description="per-user watch time and interaction rates over 1 and 7 days, activity group",
        ),
        "video_stats": FeatureView(
            name="video_stats",
            entities=[entities["video"]],
            ttl=timedelta(days=7),
            schema=[
                Field(name="video_impressions_1d", dtype=Int64),
                Field(name="video_impressions_7d", dtype=Int64),
                Field(name="video_watch_time_per_impression_7d", dtype=Float64),
                Field(name="video_click_rate_7d", dtype=Float64),
            ],
            source=sources["video_stats"],
            online=True,
            description="engagement of the requests a video was ranked in (request-level signals, see features job)",
        ),
        "live_stream_stats": FeatureView(
            name="live_stream_stats",
            entities=[entities["live_stream"]],
            ttl=timedelta(days=7),
            schema=[
                Field(name="live_exposures_1d", dtype=Int64),
                Field(name="live_exposures_7d", dtype=Int64),
                Field(name="live_watch_time_per_exposure_7d", dtype=Float64),
            ],
            source=sources["live_stream_stats"],
            online=True,
            description="exposures of a live stream in feeds and the live watch time they brought",
        ),
        "stage_stats": FeatureView(
            name="stage_stats",
            entities=[entities["stage"]],
            ttl=timedelta(days=1),
            schema=[
                Field(name="stage_requests_1d", dtype=Int64),
                Field(name="stage_units_per_request_1d", dtype=Float64),
                Field(name="compute_cost_per_request_1d", dtype=Float64),
            ],
            source=sources["stage_stats"],
            online=True,
            description="per-stage load (requests, units: channels on / queue length) and cost of allocate decisions",
        ),
    }
