"""``Mixture``: each candidate drawn from one of several strategies, by weight."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from nbest.errors import ConfigError
from nbest.strategies.base import (
    MAX_ITEMS,
    NestedStrategy,
    StrategyConfig,
    check_items,
    check_nesting,
    check_weights,
    inner_plan,
    place,
    positional,
    register,
    seeded_rng,
    sub_request,
)
from nbest.types import CandidateSpec, NbestModel, Request

__all__ = ["Mixture", "MixtureComponent"]


class MixtureComponent(NbestModel):
    """One strategy of a mixture and its weight."""

    weight: float = Field(ge=0.0)
    """Relative chance that a candidate comes from this strategy."""
    strategy: NestedStrategy
    """The strategy that plans the candidates drawn for it."""


@register("mixture")
class Mixture(StrategyConfig):
    """Stochastic mixture: each candidate is assigned to a component by a
    weighted draw from a generator seeded with the request seed; each
    component then plans the candidates it drew. Candidate ``i`` keeps seed
    ``seed + i``; labels read ``mixture.K:<component's label>``.

    >>> from nbest.strategies import Nucleus, TemperatureLadder
    >>> from nbest.types import Request, SamplingParams
    >>> mix = Mixture([(1, TemperatureLadder(0.2, 0.4)), (3, Nucleus(0.9))])
    >>> [s.strategy for s in mix.plan(Request(prompt="Hi", n=4, params=SamplingParams(seed=0)))]
    ['mixture.1:nucleus', 'mixture.1:nucleus', 'mixture.1:nucleus', 'mixture.0:ladder[t=0.20]']

    Raises:
        ConfigError: no components, or weights that are negative or sum to 0.
    """

    kind: Literal["mixture"] = "mixture"
    components: list[MixtureComponent]
    """The strategies and their weights; ``(weight, strategy)`` pairs are accepted."""

    def __init__(self, components: Sequence[Any] | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, components=components))

    @field_validator("components", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:  # refused before any entry is built
                raise ValueError(f"at most {MAX_ITEMS} entries (got {len(value)})")
            return [
                {"weight": item[0], "strategy": item[1]} if isinstance(item, (list, tuple)) and len(item) == 2 else item
                for item in value
            ]
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.components:
            raise ConfigError("components: give at least one (weight, strategy) pair", parameter="components")
        check_items(self.components, "components")
        check_weights([c.weight for c in self.components], "components.weight")
        check_nesting(self)
        return self

    def assign(self, request: Request) -> list[int]:
        """Which component each of the ``request.n`` candidates comes from."""
        rng = seeded_rng(request, "mixture")
        weights = [c.weight for c in self.components]
        return rng.choices(range(len(self.components)), weights=weights, k=request.n)

    def plan(self, request: Request) -> list[CandidateSpec]:
        assigned = self.assign(request)
        seed = request.params.seed
        specs: list[CandidateSpec] = []
        for k, component in enumerate(self.components):
            indices = [i for i, a in enumerate(assigned) if a == k]
            if not indices:
                continue
            inner = inner_plan(component.strategy, sub_request(request, len(indices), indices[0]))
            for index, spec in zip(indices, inner, strict=True):
                specs.append(place(spec, index, seed, f"mixture.{k}:{spec.strategy}"))
        return sorted(specs, key=lambda s: s.index)
