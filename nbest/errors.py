"""Errors raised by nbest.

Every error nbest raises on purpose derives from :class:`NbestError`::

    NbestError
    ├── ConfigError(NbestError, ValueError)   .parameter .value
    ├── EngineError                           .engine
    │   ├── GenerationError   one candidate failed: recorded on that candidate
    │   └── EngineDeadError   the engine is gone: the whole fan-out stops
    └── RerankerError         .reranker

Library errors are translated at the boundary and kept as ``__cause__``
(``raise EngineError(...) from exc``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "EngineDeadError",
    "EngineError",
    "GenerationError",
    "NbestError",
    "RerankerError",
]


class NbestError(Exception):
    """Base class of every error nbest raises on purpose."""


class ConfigError(NbestError, ValueError):
    """Bad input: a value out of range, an unknown name, a missing file.

    ``parameter`` names the offending field (``"temperature"``, ``"n"`` ...)
    and ``value`` holds what was given, so callers can point at it.
    """

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class EngineError(NbestError):
    """An engine could not start or could not serve a request."""

    def __init__(self, message: str, *, engine: str | None = None) -> None:
        super().__init__(message)
        self.engine = engine


class GenerationError(EngineError):
    """One candidate failed; the orchestrator records it on that candidate."""


class EngineDeadError(EngineError):
    """The engine died; every candidate in flight on it is lost."""


class RerankerError(NbestError):
    """A reranker failed to score a set of candidates."""

    def __init__(self, message: str, *, reranker: str | None = None) -> None:
        super().__init__(message)
        self.reranker = reranker
