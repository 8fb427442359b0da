"""The probes of issue #19 on real processes, at bounded sizes (`make chaos` runs them at full size).

TROUPE_CHAOS_SCALE=full (set by `make chaos`) uses the issue's sizes: a 25 s
freeze at 100 req/s, kill -9 at 5, 12 and 20 s into an outage, 29 concurrent
ingest trials, 150 schemathesis examples per operation. Without it the
sizes keep the whole file to about two minutes on two cores.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos import scenarios

FULL = os.environ.get("TROUPE_CHAOS_SCALE") == "full"


def test_two_workers_survive_a_broker_freeze_and_share_experiments(tmp_path: Path) -> None:
    c = scenarios.two_workers_broker_freeze(tmp_path, freeze_s=25.0 if FULL else 5.0, rate=100.0 if FULL else 40.0)
    assert c.answered > 100 and c.server_errors == 0, c
    assert c.lost == 0, f"{c.lost} answered decisions never reached Kafka: {c}"
    assert c.notes["experiment_seen_by_every_call"] and c.notes["users_with_an_arm"] == 8, c.notes
    assert c.notes["spool_drained"] and c.notes["spool_gauge_after"] == 0.0, c.notes
    assert c.notes["readyz_after"] == 200 and c.notes["http_requests_counted"] >= c.answered, c.notes


def test_kill_9_of_the_api_during_an_outage_loses_no_answered_decision(tmp_path: Path) -> None:
    kills = [5.0, 12.0, 20.0] if FULL else [2.5]
    c = scenarios.kill_9_during_outage(tmp_path, kills, rate=100.0 if FULL else 40.0)
    assert c.kills == len(kills) and c.answered > 50 and c.server_errors == 0, c
    assert c.lost == 0, f"{c.lost} answered decisions lost to kill -9: {c}"
    assert c.notes["spool_drained"] and c.notes["readyz_after"] == 200, c.notes


def test_concurrent_ingests_with_malformed_messages_keep_the_lake_exact(tmp_path: Path) -> None:
    c = scenarios.concurrent_ingests(tmp_path, trials=29 if FULL else 2, events_per_trial=200 if FULL else 60)
    assert c.other_errors == 0, c.notes.get("ingest_errors")
    assert c.lost == 0 and c.notes["lake_duplicates"] == 0, c
    assert c.notes["dead_letters"] == c.notes["malformed_sent"], c.notes
    assert c.notes["manifest_matches_disk"], c.notes


def test_traversal_names_and_corrupt_models_are_refused_everywhere(tmp_path: Path) -> None:
    c = scenarios.traversal_and_corrupt_models(tmp_path)
    assert c.notes["cli_refused"] == c.notes["cli_tried"] and c.notes["current_after_cli"] == "v1", c.notes
    assert c.server_errors == 0, c.notes
    for restart in (0, 1):
        # traversal: 422; sha256 mismatch: 409; unloadable: 409; rollback without history: 409
        assert c.notes[f"api_statuses_{restart}"] == [422, 409, 409, 409], c.notes
        assert c.notes[f"serving_after_{restart}"] == ["v1", False] and c.notes[f"readyz_{restart}"] == 200


def test_schemathesis_all_checks_finds_no_server_error(tmp_path: Path) -> None:
    c = scenarios.schemathesis_all_checks(tmp_path, max_examples=150 if FULL else 15)
    assert c.answered > 200, c
    assert c.server_errors == 0, c.notes["schemathesis_tail"]
