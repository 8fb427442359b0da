"""Domain errors of the contracts package.

Every message says what was wrong *and* what is allowed, so the reader can fix
the input without opening the code. HTTP codes never appear here: the API layer
maps these classes to status codes.
"""

from __future__ import annotations


class TroupeError(Exception):
    """Base class of every error Troupe raises on purpose."""


class UnknownProblemError(TroupeError, KeyError):
    """A problem name that is not in the registry of problems."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown problem {name!r}; known problems: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class EventValidationError(TroupeError, ValueError):
    """An event that does not match its schema; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class RegistryError(TroupeError):
    """A model-registry operation that cannot be carried out (missing version, bad layout)."""


class IntegrityError(RegistryError):
    """A registered file whose sha256 no longer matches its manifest: the version is refused."""
