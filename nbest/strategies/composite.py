"""``Composite``: a plan written as consecutive parts, "2 greedy-ish + 6 hot"."""

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
    inner_plan,
    place,
    positional,
    register,
    sub_request,
)
from nbest.types import CandidateSpec, NbestModel, Request

__all__ = ["Composite", "CompositePart"]


class CompositePart(NbestModel):
    """A run of consecutive candidates planned by one strategy."""

    count: int = Field(ge=1)
    """How many candidates this part plans (when the counts sum to ``n``)."""
    strategy: NestedStrategy
    """The strategy that plans them."""


@register("composite")
class Composite(StrategyConfig):
    """Consecutive parts, each planned by its own strategy: the first
    ``count`` candidates by the first part, the next by the second, ...
    Candidate ``i`` keeps seed ``seed + i``; labels read
    ``composite.K:<part's label>``.

    When the counts do not sum to ``n`` they are scaled in proportion
    (largest remainders; ties go to the earlier part), so ``[(2, a), (6, b)]``
    plans 1 + 3 candidates for ``n=4``.

    >>> from nbest.strategies import GreedyPlusSamples, TemperatureLadder
    >>> from nbest.types import Request, SamplingParams
    >>> plan = Composite([(2, TemperatureLadder(0.1, 0.3)), (2, TemperatureLadder(1.0, 1.4))])
    >>> for s in plan.plan(Request(prompt="Hi", n=4, params=SamplingParams(seed=0))):
    ...     print(s.strategy, s.params.seed)
    composite.0:ladder[t=0.10] 0
    composite.0:ladder[t=0.30] 1
    composite.1:ladder[t=1.00] 2
    composite.1:ladder[t=1.40] 3

    Raises:
        ConfigError: no parts, or a count below 1.
    """

    kind: Literal["composite"] = "composite"
    parts: list[CompositePart]
    """The parts in order; ``(count, strategy)`` pairs are accepted."""

    def __init__(self, parts: Sequence[Any] | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, parts=parts))

    @field_validator("parts", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:  # refused before any entry is built
                raise ValueError(f"at most {MAX_ITEMS} entries (got {len(value)})")
            return [
                {"count": item[0], "strategy": item[1]} if isinstance(item, (list, tuple)) and len(item) == 2 else item
                for item in value
            ]
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.parts:
            raise ConfigError("parts: give at least one (count, strategy) pair", parameter="parts")
        check_items(self.parts, "parts")
        check_nesting(self)
        return self

    def counts(self, n: int) -> list[int]:
        """How many candidates each part plans for ``n``.

        >>> Composite([(2, {"kind": "fixed"}), (6, {"kind": "fixed"})]).counts(4)
        [1, 3]
        """
        counts = [p.count for p in self.parts]
        total = sum(counts)
        if total == n:
            return counts
        quotas = [c * n / total for c in counts]
        scaled = [int(q) for q in quotas]
        by_remainder = sorted(range(len(counts)), key=lambda k: (-(quotas[k] - scaled[k]), k))
        for k in by_remainder[: n - sum(scaled)]:
            scaled[k] += 1
        return scaled

    def plan(self, request: Request) -> list[CandidateSpec]:
        seed = request.params.seed
        specs: list[CandidateSpec] = []
        offset = 0
        for k, (part, count) in enumerate(zip(self.parts, self.counts(request.n), strict=True)):
            if count == 0:
                continue
            inner = inner_plan(part.strategy, sub_request(request, count, offset))
            for j, spec in enumerate(inner):
                specs.append(place(spec, offset + j, seed, f"composite.{k}:{spec.strategy}"))
            offset += count
        return specs
