"""Dataset builder: known feedback delays (in window, late, missing), sessions, columns, card; and Kafka end to end."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker, create_topics
from models.events import to_json
from models.problems import RANK
from pipelines.jobs.dataset import DatasetConfig, build_dataset, read_transitions, transition_columns
from pipelines.jobs.ingest import IngestConfig, commit_events
from tests.integration._events import T0, decision, feedback

S = dt.timedelta(seconds=1)


def obs(v: float) -> list[float]:
    return [v] * RANK.observation_size


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """Decisions and feedback with known delays, written as one committed ingestion."""
    a = "user-a"
    b = "user-b"
    d1 = decision(1, user=a, ts=T0, session_id="s1", observation=obs(0.1))
    d2 = decision(2, user=a, ts=T0 + 60 * S, session_id="s1", observation=obs(0.2))
    d3 = decision(3, user=a, ts=T0 + 120 * S, session_id="s1", observation=obs(0.3))
    d4 = decision(4, user=a, ts=T0 + 180 * S, session_id="s1", observation=obs(0.4))
    d5 = decision(5, user=b, ts=T0, observation=obs(0.5))
    d6 = decision(6, user=b, ts=T0 + 100 * S, observation=obs(0.6))
    d7 = decision(7, user=b, ts=T0 + 4100 * S, observation=obs(0.7))  # 4000 s gap > 1800 s
    bad = decision(8, user=b, ts=T0 + 5000 * S, observation=[0.0] * 3)  # wrong observation size
    other_problem = decision(9, problem="slot", user=a, ts=T0)
    fb4a = feedback(d4, 5, watch_time=30.0)
    events = [
        d1, d2, d3, d4, d5, d6, d7, bad, other_problem,
        decision(1, user=a, ts=T0, session_id="s1", observation=obs(0.1)),  # at-least-once repeat of d1
        feedback(d1, 10, click=1.0, watch_time=12.0),
        feedback(d2, 7200, click=1.0),  # late: 2 h > 1 h window
        # d3: no feedback at all
        fb4a, fb4a,  # a repeated feedback event counts once
        feedback(d4, 20, click=1.0, like=1.0),
        feedback(d5, 3, session_end=1.0, watch_time=4.0),
        feedback(d6, 3, watch_time=6.0),
        feedback(d7, 3, share=1.0),
        feedback(decision(99), 3, click=1.0),  # orphan: no decision
    ]  # fmt: skip
    commit_events(IngestConfig("127.0.0.1:1", tmp_path), events)
    return tmp_path


def test_join_sessions_and_counts_with_known_delays(lake: Path) -> None:
    result = build_dataset(DatasetConfig(lake, "rank", attribution_window_s=3600))
    table = read_transitions(lake, "rank")
    assert tuple(table.column_names) == transition_columns("rank") == tuple(result.card["columns"])
    rows = {r["request_id"]: r for r in table.to_pylist()}
    # d2 is late, d3 missing: dropped; the rest joined.
    assert set(rows) == {f"req-rank-{i}" for i in (1, 4, 5, 6, 7)}
    c = result.card["counts"]
    assert c["decisions"] == 7 and c["duplicate_decisions"] == 1 and c["bad_shape_decisions"] == 1
    assert c["joined"] == 5 and c["late"] == 1 and c["missing"] == 1 and c["late_feedback_events"] == 1
    assert c["dropped_without_feedback"] == 2
    assert result.card["join_rate"] == pytest.approx(5 / 7)
    # Rewards: summed within the window, a repeated feedback event once.
    r1, r4 = rows["req-rank-1"], rows["req-rank-4"]
    assert (r1["reward_click"], r1["reward_watch_time"]) == (1.0, 12.0)
    assert (r4["reward_watch_time"], r4["reward_click"], r4["reward_like"]) == (30.0, 1.0, 1.0)
    # Trajectory of session s1: d1 → d2 (d2 itself dropped later), d4 ends the session.
    assert r1["next_observation"] == obs(0.2) and r1["done"] is False and r1["session_id"] == "s1"
    assert r4["done"] is True and r4["next_observation"] == [0.0] * RANK.observation_size
    # user-b has no session ids: session_end after d5, then a 4000 s gap after d6.
    r5, r6, r7 = rows["req-rank-5"], rows["req-rank-6"], rows["req-rank-7"]
    assert r5["done"] and r6["done"] and r7["done"]
    assert len({r5["session_id"], r6["session_id"], r7["session_id"]}) == 3
    assert r1["propensity"] == 0.5 and r1["log_density"] is None and r1["policy_version"] == "1"
    assert r1["arm"] == "control" and r1["experiment"] == "exp-1" and len(r1["action"]) == 18
    card = json.loads((lake / "datasets" / "rank" / "card.json").read_text())
    assert card["rows"] == 5 and card["rewards"]["watch_time"]["max"] == 30.0
    assert card["time_range"][0].startswith("2026-11-20T10:00:00")


def test_zero_mode_keeps_unrewarded_decisions_and_a_longer_window_attributes_late_feedback(lake: Path) -> None:
    zero = build_dataset(DatasetConfig(lake, "rank", missing_feedback="zero"))
    rows = {r["request_id"]: r for r in read_transitions(lake, "rank").to_pylist()}
    assert zero.card["rows"] == 7 and rows["req-rank-3"]["reward_click"] == 0.0
    assert rows["req-rank-2"]["reward_click"] == 0.0  # late: not attributed
    assert rows["req-rank-2"]["next_observation"] == obs(0.3)
    wide = build_dataset(DatasetConfig(lake, "rank", attribution_window_s=3 * 3600))
    assert wide.card["counts"]["joined"] == 6 and wide.card["counts"]["late"] == 0
    assert wide.card["counts"]["missing"] == 1


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="attribution_window_s"):
        DatasetConfig(Path("x"), "rank", attribution_window_s=0)
    with pytest.raises(KeyError, match="known problems"):
        DatasetConfig(Path("x"), "nope")


def test_kafka_to_transitions_end_to_end_through_the_cli(
    kafka_broker: EmbeddedBroker, troupe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from kafka import KafkaProducer

    tag = uuid.uuid4().hex[:8]
    dec, fb = f"ds.decisions.{tag}", f"ds.feedback.{tag}"
    create_topics(kafka_broker.bootstrap_servers, {dec: 2, fb: 2})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for i in range(60):
        d = decision(i, problem="slot", action=[float(i % 7)], propensity=1 / 7)
        producer.send(dec, to_json(d), key=d.user_id.encode())
        if i % 4:
            producer.send(
                fb, to_json(feedback(d, 2, live_watch_time=float(i), live_exposure=1.0)), key=d.user_id.encode()
            )
    producer.flush()
    producer.close()
    from typer.testing import CliRunner

    from models.settings import get_settings
    from pipelines.cli import app

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("TROUPE_DECISIONS_TOPIC", dec)
    monkeypatch.setenv("TROUPE_FEEDBACK_TOPIC", fb)
    get_settings.cache_clear()
    runner = CliRunner()
    out = runner.invoke(app, ["ingest"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["rows"] == {dec: 60, fb: 45}
    out = runner.invoke(app, ["dataset", "build", "--problem", "slot"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["rows"] == 45 and summary["counts"]["missing"] == 15
    data = troupe_home / "data"
    table = read_transitions(data, "slot")
    assert {"reward_live_watch_time", "reward_watch_time", "reward_session_end", "reward_live_exposure"} <= set(
        table.column_names
    )
    assert sum(table["reward_live_watch_time"].to_pylist()) == sum(i for i in range(60) if i % 4)
