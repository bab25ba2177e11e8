"""``Route``: send each candidate to an engine drawn by weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from nbest.errors import ConfigError
from nbest.strategies.base import (
    NestedStrategy,
    StrategyConfig,
    check_nesting,
    check_weights,
    inner_plan,
    positional,
    register,
    seeded_rng,
)
from nbest.strategies.fixed import Fixed
from nbest.types import CandidateSpec, Request

__all__ = ["Route"]


@register("route")
class Route(StrategyConfig):
    """Stochastic routing across engines: ``inner`` plans the sampling
    settings, then each candidate's engine is drawn by weight from a generator
    seeded with the request seed, so several models share one N-best list.
    The names are the orchestrator's engine names
    (``Orchestrator({"small": e1, "big": e2})``); labels read
    ``route.ENGINE:<inner label>``.

    >>> from nbest.types import Request, SamplingParams
    >>> plan = Route({"small": 3, "big": 1}).plan(Request(prompt="Hi", n=4, params=SamplingParams(seed=0)))
    >>> [s.engine for s in plan]
    ['small', 'small', 'big', 'small']

    Raises:
        ConfigError: no engines, an empty engine name, or weights that are
            negative or sum to 0.
    """

    kind: Literal["route"] = "route"
    weights: dict[str, float]
    """Engine name -> relative chance that a candidate goes to it."""
    inner: NestedStrategy = Field(default_factory=Fixed)
    """The strategy that plans everything but the engine."""

    def __init__(self, weights: Mapping[str, float] | None = None, inner: Any = None, /, **data: Any) -> None:
        super().__init__(**positional(data, weights=None if weights is None else dict(weights), inner=inner))

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.weights:
            raise ConfigError("weights: give at least one engine name and its weight", parameter="weights")
        if any(not name.strip() for name in self.weights):
            raise ConfigError("weights: engine names must not be empty", parameter="weights")
        check_weights(list(self.weights.values()), "weights")
        check_nesting(self)
        return self

    def plan(self, request: Request) -> list[CandidateSpec]:
        names = list(self.weights)
        rng = seeded_rng(request, "route")
        engines = rng.choices(names, weights=[self.weights[name] for name in names], k=request.n)
        specs = inner_plan(self.inner, request)
        return [
            spec.model_copy(update={"engine": engine, "strategy": f"route.{engine}:{spec.strategy}"})
            for spec, engine in zip(specs, engines, strict=True)
        ]
