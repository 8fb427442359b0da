"""Domain errors of the decision API. HTTP codes are chosen in serving/api/, never here."""

from __future__ import annotations

from models.errors import TroupeError


class ServingError(TroupeError):
    """Base class of the errors the decision API raises on purpose."""


class InferenceError(ServingError):
    """A backend could not score a batch (server down, bad output shape, timeout)."""


class ModelNotLoadedError(ServingError):
    """A problem or version has no loaded policy; promote one with `troupe registry promote`."""


class BadRequestError(ServingError):
    """A request that passed the schema but cannot be served; `field` names the part to fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class ExperimentError(ServingError):
    """An experiment definition or change that cannot be applied (unknown arm, bad weights)."""


class UnknownExperimentError(ExperimentError):
    """An experiment name that is not defined."""
