"""The Strategy protocol, the registry of built-in strategies, and config loading.

A strategy turns a :class:`~nbest.types.Request` into ``request.n``
:class:`~nbest.types.CandidateSpec` s. Built-in strategies are pydantic models
with a ``kind`` field, registered under that kind, so a plan can be written in
a config file, loaded with :func:`from_config` and printed back with
``model_dump()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from nbest.errors import ConfigError
from nbest.types import CandidateSpec, NbestModel, Request

__all__ = ["Strategy", "StrategyConfig", "from_config", "register", "registered"]


@runtime_checkable
class Strategy(Protocol):
    """Decides engine, prompt variant and sampling settings of every candidate.

    ``plan`` must be deterministic given the request (its seed included) and
    return exactly ``request.n`` specs, indexed 0 .. n-1.
    """

    def plan(self, request: Request) -> list[CandidateSpec]: ...


class StrategyConfig(NbestModel):
    """Base of the built-in strategies: a validated config with a ``kind``."""

    kind: str
    registry_kind: ClassVar[str] = ""

    def plan(self, request: Request) -> list[CandidateSpec]:
        raise NotImplementedError


_REGISTRY: dict[str, type[StrategyConfig]] = {}

S = TypeVar("S", bound=type[StrategyConfig])


def register(kind: str) -> Callable[[S], S]:
    """Class decorator: make a strategy loadable from config under ``kind``."""

    def decorate(cls: S) -> S:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ConfigError(f"strategy kind {kind!r} is registered twice", parameter="kind", value=kind)
        cls.registry_kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def registered() -> dict[str, type[StrategyConfig]]:
    """The registered strategy kinds and their classes."""
    return dict(_REGISTRY)


def from_config(data: dict[str, Any]) -> StrategyConfig:
    """Build a strategy from its config dict (``{"kind": "fixed", ...}``).

    Raises:
        ConfigError: unknown ``kind`` (the message lists the known ones) or a bad field.

    >>> from_config({"kind": "fixed"}).kind
    'fixed'
    """
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"a strategy config is a mapping with a 'kind' (one of {sorted(_REGISTRY)})", parameter="kind")
    kind = data["kind"]
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ConfigError(f"unknown strategy kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}", parameter="kind", value=kind)
    return cls.parse(data)
