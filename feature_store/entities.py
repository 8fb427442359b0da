"""Feast entities: user, video, live_stream, stage. Declarations only (built on call, nothing at import)."""

from __future__ import annotations

from feast import Entity, ValueType


def entities() -> dict[str, Entity]:
    """Entity name → Entity. Join keys are the column names the feature tables carry."""
    return {
        "user": Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a viewer"),
        "video": Entity(name="video", join_keys=["video_id"], value_type=ValueType.STRING, description="a short video"),
        "live_stream": Entity(
            name="live_stream", join_keys=["live_stream_id"], value_type=ValueType.STRING, description="a live stream"
        ),
        "stage": Entity(
            name="stage",
            join_keys=["stage"],
            value_type=ValueType.STRING,
            description="a cascade stage: retrieval, pre_rank or rank",
        ),
    }
