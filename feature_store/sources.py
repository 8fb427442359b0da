"""Feast offline sources: Parquet tables that `troupe features materialize` computes from the lake.

Each source is one file `<features_dir>/<view>.parquet` with the entity key,
`event_timestamp` (the end of the window the row aggregates: a row never
contains events at or after its own timestamp, which is what makes
point-in-time joins leak-free) and `created` (when the job computed it).
"""

from __future__ import annotations

from pathlib import Path

from feast import FileSource

VIEWS: tuple[str, ...] = ("user_stats", "video_stats", "live_stream_stats", "stage_stats")


def source_path(features_dir: Path, view: str) -> Path:
    return features_dir / f"{view}.parquet"


def sources(features_dir: Path) -> dict[str, FileSource]:
    """View name → its FileSource under `features_dir` (an absolute path chosen at run time)."""
    return {
        view: FileSource(
            name=f"{view}_source",
            path=str(source_path(features_dir, view).resolve()),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        for view in VIEWS
    }
