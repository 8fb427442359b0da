"""Units of the feedback signals, for axis labels and tables (ours: read from models/problems.py's descriptions).

Every signal is logged per decision (one request); watch times are seconds,
revenue is cents, compute is the allocate problem's compute units, the
interaction signals are counts per request, and the 0/1 signals are rates.
"""

from __future__ import annotations

SIGNAL_UNITS: dict[str, str] = {
    "watch_time": "s",
    "live_watch_time": "s",
    "revenue": "cents",
    "compute_cost": "compute units",
    "click": "clicks",
    "like": "likes",
    "follow": "follows",
    "comment": "comments",
    "share": "shares",
    "session_end": "sessions ended",
    "live_exposure": "live streams shown",
}


def unit(signal: str) -> str:
    """The signal's unit, e.g. 's'; 'value' for a signal not in the table (never a silent empty label)."""
    return SIGNAL_UNITS.get(signal, "value")


def per(signal: str, what: str) -> str:
    """'watch_time (s per decision)', 'watch_time (s per session)'."""
    return f"{signal} ({unit(signal)} per {what})"
