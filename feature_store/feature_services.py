"""Feast feature services, one per problem and version, named by models/problems.py `feature_service`.

Serving reads a service with the request's user_id only (serving/features.py),
so each service holds the user features its problem's observation needs; the
video, live-stream and stage views are read by their own keys (training, batch
jobs) and are not part of these services.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

# Problem → user features its observation uses (models/problems.py observation fields).
# slot_v2 adds the live behaviour sequence: the slot observation grew from 23 to 33 values, and a model's
# manifest names the service its inputs were built from, so the layout change is a new version. slot_v1
# stays declared, unchanged, for serving replicas of the previous release during a rolling deploy; no
# code of this release reads it.
SERVICE_FEATURES: dict[str, tuple[str, ...]] = {
    "rank_v1": ("user_activity_group", "user_recent_rates"),
    "slot_v1": ("user_activity_group", "user_recent_rates", "user_live_affinity"),
    "slot_v2": ("user_activity_group", "user_recent_rates", "user_live_affinity", "user_live_sequence"),
    "allocate_v1": ("user_activity_group",),
}


def feature_services(views: dict[str, FeatureView]) -> list[FeatureService]:
    user = views["user_stats"]
    return [
        FeatureService(
            name=name, features=[user[list(features)]], description=f"user features of {name.rsplit('_', 1)[0]}"
        )
        for name, features in SERVICE_FEATURES.items()
    ]
