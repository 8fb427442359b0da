"""Feast for real: apply + materialize from the lake, online reads (SQLite and Redis), point-in-time joins."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from models.events import DecisionEvent, FeedbackEvent, Signals
from models.problems import SLOT, SLOT_LIVE_SEQUENCE_LENGTH
from pipelines.jobs.features import FeaturesConfig, apply, materialize
from pipelines.jobs.ingest import IngestConfig, commit_events
from tests.integration._events import decision

H = dt.timedelta(hours=1)
# Recent enough for the views' TTLs whatever day the tests run.
DAY1 = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
DAY2 = DAY1 + dt.timedelta(days=1)


def fb(rid: str, user: str, ts: dt.datetime, problem: str | None, **signals: float) -> FeedbackEvent:
    return FeedbackEvent(request_id=rid, timestamp=ts, user_id=user, problem=problem, signals=Signals(**signals))


def lake_events() -> list[DecisionEvent | FeedbackEvent]:
    """alice: day 1 two rank requests (clicked, 120 s and 60 s); day 2 two more (no click, 0 s).
    Slot feedback for alice: day 1 one live exposure with 30 s live watch time; day 2 one exposure she did
    not enter and one page without a live stream. bob: one rank request."""
    t = DAY1 + 10 * H + dt.timedelta(minutes=5)
    u = DAY2 + 10 * H + dt.timedelta(minutes=5)
    events: list[DecisionEvent | FeedbackEvent] = [
        fb("a1", "alice", t, "rank", click=1, watch_time=120, like=1),
        fb("a2", "alice", t + dt.timedelta(minutes=1), "rank", click=1, watch_time=60),
        fb("a3", "alice", u, "rank"),
        fb("a4", "alice", u, "rank"),
        fb("a5", "alice", t, "slot", live_watch_time=30, live_exposure=1),
        fb("a6", "alice", u + dt.timedelta(minutes=2), "slot", live_exposure=1),
        fb("a7", "alice", u + dt.timedelta(minutes=3), "slot"),
        fb("b1", "bob", t, "rank", share=1, watch_time=6),
        decision(1, problem="allocate", ts=t, request_id="c1", action=[1.0, 1.0, 0.0, 2.0, 1.0, 1.0]),
        fb("c1", "carol", t, "allocate", compute_cost=0.8),
        decision(3, problem="rank", ts=t, request_id="a1", user_id="alice", candidate_ids=["v1", "v2"]),
        decision(2, problem="slot", ts=t, request_id="a5", user_id="alice", action=[2.0], candidate_ids=["live-9"]),
    ]
    return events


@pytest.fixture(scope="module")
def feast_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, FeaturesConfig]]:
    home = tmp_path_factory.mktemp("troupe-home")
    commit_events(IngestConfig("127.0.0.1:1", home / "data"), lake_events())
    cfg = FeaturesConfig(data_dir=home / "data", repo_dir=home / "feature_repo")
    store = apply(cfg)
    rows = materialize(cfg, start=DAY1 - H, end=DAY2 + 12 * H)
    assert (
        rows["user_stats"] == 3
        and rows["stage_stats"] == 3
        and rows["live_stream_stats"] == 1
        and rows["video_stats"] == 2
    )
    yield store, cfg


def test_runtime_repo_lives_under_home(feast_store: tuple[Any, FeaturesConfig]) -> None:
    _, cfg = feast_store
    assert (cfg.repo_dir / "feature_store.yaml").exists() and (cfg.repo_dir / "registry.db").exists()
    text = (cfg.repo_dir / "feature_store.yaml").read_text()
    assert "type: sqlite" in text and str(cfg.repo_dir) in text


def test_online_features_equal_the_values_computed_from_the_logs(feast_store: tuple[Any, FeaturesConfig]) -> None:
    store, _ = feast_store
    service = store.get_feature_service(SLOT.feature_service)
    got = store.get_online_features(features=service, entity_rows=[{"user_id": "alice"}, {"user_id": "bob"}]).to_dict()
    # alice's latest row (day 2, 11:00) covers 7 days: 4 rank requests, 180 s, 2 clicks, 1 like.
    assert got["user_recent_rates"][0] == pytest.approx([180 / 4 / 60, 0.5, 0.25, 0.0, 0.0, 0.0])
    # 3 slot requests, 30 s of live watch time, 2 exposures.
    assert got["user_live_affinity"][0] == pytest.approx([30 / 3 / 60, 2 / 3])
    # Her last live exposures, most recent first: day 2's (not entered), day 1's (30 s); then padding.
    a5, a6 = (DAY1 + 10 * H + dt.timedelta(minutes=5)), (DAY2 + 10 * H + dt.timedelta(minutes=7))
    padding = [0.0, 0.0] * (SLOT_LIVE_SEQUENCE_LENGTH - 2)
    assert got["user_live_sequence"][0] == pytest.approx([0.0, a6.timestamp(), 30.0, a5.timestamp(), *padding])
    assert got["user_live_sequence"][1] == [0.0] * (2 * SLOT_LIVE_SEQUENCE_LENGTH)  # bob: no live exposure
    assert got["user_activity_group"] == [0, 0]
    assert got["user_recent_rates"][1] == pytest.approx([0.1, 0, 0, 0, 0, 1.0])
    rank = store.get_online_features(features=store.get_feature_service("rank_v1"), entity_rows=[{"user_id": "alice"}])
    assert set(rank.to_dict()) == {"user_id", "user_activity_group", "user_recent_rates"}
    stage = store.get_online_features(
        features=["stage_stats:stage_units_per_request_1d", "stage_stats:compute_cost_per_request_1d"],
        entity_rows=[{"stage": "retrieval"}, {"stage": "pre_rank"}, {"stage": "rank"}],
    ).to_dict()
    assert stage["stage_units_per_request_1d"] == [2.0, 400.0, 50.0]
    assert stage["compute_cost_per_request_1d"] == pytest.approx([0.8] * 3)
    live = store.get_online_features(
        features=["live_stream_stats:live_exposures_7d", "live_stream_stats:live_watch_time_per_exposure_7d"],
        entity_rows=[{"live_stream_id": "live-9"}],
    ).to_dict()
    video = store.get_online_features(
        features=["video_stats:video_impressions_7d", "video_stats:video_watch_time_per_impression_7d"],
        entity_rows=[{"video_id": "v2"}],
    ).to_dict()
    assert video["video_impressions_7d"] == [1] and video["video_watch_time_per_impression_7d"] == [120.0]
    assert live["live_exposures_7d"] == [1] and live["live_watch_time_per_exposure_7d"] == [30.0]


def test_historical_features_are_point_in_time_correct(feast_store: tuple[Any, FeaturesConfig]) -> None:
    store, _ = feast_store
    entity_df = pd.DataFrame(
        {
            "user_id": ["alice", "alice", "alice"],
            "event_timestamp": [
                DAY1 + 10 * H + dt.timedelta(minutes=30),  # inside the hour of the first clicks: not visible yet
                DAY1 + 12 * H,  # after day 1's hour ended: 2 requests, both clicked
                DAY2 + 11 * H + dt.timedelta(minutes=1),  # after day 2's hour: 4 requests, 2 clicks
            ],
        }
    )
    df = store.get_historical_features(
        entity_df=entity_df,
        features=[
            "user_stats:click_rate_7d",
            "user_stats:requests_7d",
            "user_stats:click_rate_1d",
            "user_stats:user_live_sequence",
        ],
    ).to_df()
    # Feast's file store may leave out an entity row that matches no feature row: put the rows back in order.
    df = entity_df.merge(df, on=["user_id", "event_timestamp"], how="left")
    assert pd.isna(df.loc[0, "click_rate_7d"]), "a value from after the entity's timestamp leaked in"
    assert (df.loc[1, "click_rate_7d"], df.loc[1, "requests_7d"]) == (1.0, 2)
    assert (df.loc[2, "click_rate_7d"], df.loc[2, "requests_7d"]) == (0.5, 4)
    assert df.loc[2, "click_rate_1d"] == 0.0  # day 1's clicks fell out of the 1-day window
    # The live sequence as of each instant: day 1's exposure only, then day 2's in front of it.
    day1 = (DAY1 + 10 * H + dt.timedelta(minutes=5)).timestamp()
    day2 = (DAY2 + 10 * H + dt.timedelta(minutes=7)).timestamp()
    padding = [0.0] * (2 * SLOT_LIVE_SEQUENCE_LENGTH)
    assert list(df.loc[1, "user_live_sequence"]) == pytest.approx([30.0, day1, *padding[2:]])
    assert list(df.loc[2, "user_live_sequence"]) == pytest.approx([0.0, day2, 30.0, day1, *padding[4:]])


def test_redis_online_store(feast_store: tuple[Any, FeaturesConfig], tmp_path: Path) -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is required (make services starts it): {exc}")
    _, sqlite_cfg = feast_store
    cfg = FeaturesConfig(
        data_dir=sqlite_cfg.data_dir,
        repo_dir=tmp_path / "feature_repo",
        project=f"troupe_test_{uuid.uuid4().hex[:8]}",
        online_store="redis",
    )
    store = apply(cfg)
    try:
        materialize(cfg, start=DAY1 - H, end=DAY2 + 12 * H, compute=False)
        got = store.get_online_features(
            features=store.get_feature_service("rank_v1"), entity_rows=[{"user_id": "alice"}]
        ).to_dict()
        assert got["user_recent_rates"][0] == pytest.approx([180 / 4 / 60, 0.5, 0.25, 0.0, 0.0, 0.0])
        assert "type: redis" in (cfg.repo_dir / "feature_store.yaml").read_text()
    finally:
        store.teardown()
