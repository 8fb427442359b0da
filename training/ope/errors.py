"""Errors of the off-policy evaluation package; each message says what was expected."""

from __future__ import annotations

from models.errors import TroupeError


class OPEInputError(TroupeError, ValueError):
    """An estimator input with the wrong shape, type or range; `field` names the argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")
