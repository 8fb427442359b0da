"""Polling for what another thread or process makes true soon (a pub/sub update, a write-behind flush)."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(check: Callable[[], bool], timeout_s: float = 5.0, every_s: float = 0.01) -> bool:
    """True as soon as `check()` is; after `timeout_s`, whatever the last `check()` says."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
