"""serving/state_store.py against the real Redis on 127.0.0.1:6379 (db 7, a private key prefix per test)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from serving.errors import ExperimentError
from serving.experiments import Experiment, ExperimentStore
from serving.settings import ServingSettings
from serving.state_store import StateStore, StateStoreError, open_state_store
from tests.support.waiting import until

URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def pair() -> Iterator[tuple[StateStore, StateStore]]:
    """Two stores on one prefix: what two worker processes see."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    a, b = StateStore(URL, prefix, resync_s=1.0).start(), StateStore(URL, prefix, resync_s=1.0).start()
    try:
        yield a, b
    finally:
        for key in a._redis.scan_iter(match=f"{prefix}:*"):
            a._redis.delete(key)
        a.close()
        b.close()


def test_a_write_in_one_process_reaches_the_others_cache_and_watchers(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair
    for store in pair:
        store.cache("things")
    seen: list[tuple[str, object]] = []
    b.watch("things", lambda name, value: seen.append((name, value)))
    a.set("things", "x", {"n": 1})
    assert a.get("things", "x") == {"n": 1}, "read-your-writes"
    assert until(lambda: b.get("things", "x") == {"n": 1})
    assert ("x", {"n": 1}) in seen
    a.delete("things", "x")
    assert until(lambda: b.get("things", "x") is None) and ("x", None) in seen
    assert a.set("things", "y", 1) is not False and a.set("things", "y", 2, only_new=True) is False
    assert until(lambda: b.items("things") == {"y": 1})


def test_a_change_missed_by_the_listener_is_picked_up_by_the_resync(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair
    b.cache("things")
    a._redis.set(a.key("things", "silent"), b"42")  # written without a change message
    assert until(lambda: b.get("things", "silent") == 42, timeout_s=5.0)


def test_updates_are_atomic_across_processes(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair

    def bump(store: StateStore) -> None:
        for _ in range(50):
            store.update("counters", "n", lambda v: (v or 0) + 1)

    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.get("counters", "n") == 200


def test_lambda_and_session_helpers(pair: tuple[StateStore, StateStore]) -> None:
    a, b = pair
    b.cache("mpc_lambda")
    assert a.get_lambda("allocate") is None
    a.set_lambda("allocate", 0.75)
    assert until(lambda: b.get_lambda("allocate") == 0.75)
    with pytest.raises(ValueError, match="finite"):
        a.set_lambda("allocate", float("nan"))
    a.set_session("session/with:odd chars", {"messages": [1, 2]}, ttl_s=0.3)
    assert b.get_session("session/with:odd chars") == {"messages": [1, 2]}
    assert until(lambda: b.get_session("session/with:odd chars") is None, timeout_s=3.0), "expired"


def test_experiments_are_shared_and_the_yaml_only_seeds(pair: tuple[StateStore, StateStore], tmp_path: Path) -> None:
    a, b = pair
    arms = [{"name": "control", "weight": 1.0}, {"name": "treatment", "weight": 1.0}]
    exp = {"name": "slot-a", "problem": "slot", "salt": "s1", "arms": arms}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"experiments": [exp]}))
    first = ExperimentStore.from_yaml(tmp_path / "e.yaml").attach(a)
    second = ExperimentStore.from_yaml(tmp_path / "e.yaml").attach(b)  # seeds again: nothing changes
    assert first.running_for("slot") is not None and second.running_for("slot") is not None
    first.update_weights("slot-a", {"treatment": 0.0})
    assert until(lambda: [x.weight for x in second.get("slot-a").arms] == [1.0, 0.0])
    # A third worker starting from the same YAML keeps what Redis has (the weights changed above).
    third = ExperimentStore.from_yaml(tmp_path / "e.yaml").attach(StateStore(URL, a.prefix).start())
    assert [x.weight for x in third.get("slot-a").arms] == [1.0, 0.0]
    # One running experiment per problem, across processes.
    with pytest.raises(ExperimentError, match="already runs"):
        second.create(Experiment.model_validate({**exp, "name": "slot-b"}))
    second.stop("slot-a")
    assert until(lambda: first.running_for("slot") is None)
    first.create(Experiment.model_validate({**exp, "name": "slot-b", "problem": "slot"}))
    assert until(lambda: (second.running_for("slot") or Experiment.model_validate(exp)).name == "slot-b")
    assert {e.name for e in second.all()} == {"slot-a", "slot-b"}


def test_two_workers_without_a_store_are_refused_with_the_fix() -> None:
    with pytest.raises(StateStoreError, match="TROUPE_STATE_STORE_URL"):
        open_state_store(ServingSettings(workers=2))
    assert open_state_store(ServingSettings(workers=1)) is None
    with pytest.raises(StateStoreError, match="does not answer"):
        StateStore("redis://127.0.0.1:1/0").start()


def test_ab_report_sees_an_experiment_created_through_the_api(
    pair: tuple[StateStore, StateStore], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipelines.jobs.ab_report import experiment_config

    a, _ = pair
    store = ExperimentStore().attach(a)
    exp = {"name": "made-by-api", "problem": "slot", "salt": "s", "arms": [{"name": "x", "weight": 1.0}]}
    store.create(Experiment.model_validate(exp))
    monkeypatch.setenv("TROUPE_STATE_STORE_URL", URL)
    monkeypatch.setenv("TROUPE_STATE_STORE_PREFIX", a.prefix)
    found = experiment_config("made-by-api", experiments_file=tmp_path / "absent.yaml")
    assert found is not None and found["arms"][0]["name"] == "x"
    monkeypatch.delenv("TROUPE_STATE_STORE_URL")
    assert experiment_config("made-by-api", experiments_file=tmp_path / "absent.yaml") is None
