"""`split_by_session`: the retrain DAG's train / holdout files, whole sessions on one side, the same side every time."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.jobs.dataset import split_by_session


def _dataset(path: Path, sessions: int, steps: int = 3) -> Path:
    ids = [f"user{u}#1" for u in range(sessions) for _ in range(steps)]  # each session has `steps` rows
    pq.write_table(pa.table({"session_id": ids, "row": list(range(len(ids)))}), path)
    return path


def test_sessions_are_split_whole_disjointly_and_the_same_way_on_a_rerun(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "t.parquet", 400)
    train, holdout = split_by_session(data, tmp_path / "a", 0.5)
    a_train, a_held = pq.read_table(train).to_pydict(), pq.read_table(holdout).to_pydict()
    assert sorted(a_train["row"] + a_held["row"]) == list(range(1200))  # every row, once
    assert not set(a_train["session_id"]) & set(a_held["session_id"])  # no session straddles the split
    assert 0.4 < len(set(a_held["session_id"])) / 400 < 0.6
    again = split_by_session(data, tmp_path / "b", 0.5)
    assert pq.read_table(again[1]).to_pydict() == a_held
    small = pq.read_table(split_by_session(data, tmp_path / "c", 0.2)[1]).to_pydict()
    assert set(small["session_id"]) <= set(a_held["session_id"])  # a smaller share holds out a subset


def test_bad_shares_and_datasets_name_what_was_expected(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "t.parquet", 50)
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="holdout_share"):
            split_by_session(data, tmp_path / "o", share)
    pq.write_table(pa.table({"row": [1, 2]}), tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="no session_id column"):
        split_by_session(tmp_path / "bare.parquet", tmp_path / "o", 0.5)
    with pytest.raises(ValueError, match="one side"):
        split_by_session(_dataset(tmp_path / "one.parquet", 1), tmp_path / "o", 0.5)
