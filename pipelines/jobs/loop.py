"""What the retraining jobs share: data intervals, run folders, idempotency markers, and loud missing pieces.

Each retraining run of one problem over one data interval owns one folder,
`<home>/runs/<problem>/<interval key>/`, and every job writes into its own
sub-folder there and finishes by writing `<step>/_DONE.json` (atomically) with
what it produced. Re-running a job for the same interval finds the marker and
returns the recorded result without redoing the work — that is what makes each
task idempotent for its data interval, and why tasks pass paths, not data.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from models.errors import TroupeError
from models.registry import atomic_write_bytes

DONE_FILE = "_DONE.json"


class MissingPieceError(TroupeError):
    """A module or function another part of the project provides is not there (yet)."""

    def __init__(self, what: str, owner: str, detail: str = "") -> None:
        self.what = what
        self.owner = owner
        msg = f"{what} is missing: it is provided by {owner}."
        if detail:
            msg += f" {detail}"
        super().__init__(msg)


def require(module: str, attribute: str | None, owner: str) -> Any:
    """Import `module` (and return `attribute` of it, when given); a missing one raises MissingPieceError."""
    try:
        mod: ModuleType = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise MissingPieceError(f"module {module}", owner) from err
        raise
    if attribute is None:
        return mod
    try:
        return getattr(mod, attribute)
    except AttributeError:
        raise MissingPieceError(f"{module}.{attribute}", owner, f"{module} exists but has no {attribute!r}.") from None


@dataclass(frozen=True)
class Interval:
    """A half-open data interval [start, end) in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None:
                raise ValueError(f"Interval.{name} must carry a timezone (UTC expected), got {value!r}")
        if not self.start < self.end:
            raise ValueError(f"Interval: start ({self.start}) must be before end ({self.end})")

    @classmethod
    def parse(cls, start: str | dt.datetime, end: str | dt.datetime) -> Interval:
        def one(v: str | dt.datetime, name: str) -> dt.datetime:
            if isinstance(v, dt.datetime):
                out = v
            else:
                try:
                    out = dt.datetime.fromisoformat(v)
                except ValueError:
                    raise ValueError(f"interval {name}: {v!r} is not an ISO-8601 timestamp") from None
            if out.tzinfo is None:
                raise ValueError(f"interval {name}: {v!r} has no timezone; write it as UTC, e.g. '...+00:00'")
            return out.astimezone(dt.UTC)

        return cls(one(start, "start"), one(end, "end"))

    @property
    def key(self) -> str:
        """A folder- and version-safe name for the interval, e.g. 20261121T0000-20261122T0000."""
        return f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"

    def as_strings(self) -> tuple[str, str]:
        return self.start.isoformat(), self.end.isoformat()


def run_dir(home: Path, problem: str, interval: Interval) -> Path:
    """The folder of one retraining run: `<home>/runs/<problem>/<interval key>`."""
    return home / "runs" / problem / interval.key


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write `data` as indented JSON, atomically (temp → fsync → rename)."""
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())
    return path


def read_done(step_dir: Path) -> dict[str, Any] | None:
    """The recorded result of a finished step, or None when the step has not finished."""
    marker = step_dir / DONE_FILE
    if not marker.exists():
        return None
    data = json.loads(marker.read_text())
    if not isinstance(data, dict):
        raise TroupeError(f"{marker} is not a JSON object; delete it to re-run the step")
    return data


def write_done(step_dir: Path, result: Mapping[str, Any]) -> dict[str, Any]:
    """Record a step's result; written last, so a crashed step is simply re-run."""
    out = dict(result)
    write_json(step_dir / DONE_FILE, out)
    return out
