"""``Fixed``: every candidate gets the request's settings, with seeds ``seed + i``."""

from __future__ import annotations

from typing import Literal

from nbest.strategies.base import StrategyConfig, register
from nbest.types import CandidateSpec, Request

__all__ = ["Fixed"]


@register("fixed")
class Fixed(StrategyConfig):
    """Same sampling settings for every candidate; candidate ``i`` gets seed
    ``seed + i``, so candidates differ but the whole run is reproducible.

    >>> from nbest.types import Request, SamplingParams
    >>> [s.params.seed for s in Fixed().plan(Request(prompt="Hi", n=3, params=SamplingParams(seed=7)))]
    [7, 8, 9]
    """

    kind: Literal["fixed"] = "fixed"
    engine: str = "default"
    """The engine (route) every candidate goes to."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        base = request.params
        return [
            CandidateSpec(
                index=i,
                engine=self.engine,
                params=base.model_copy(update={"seed": None if base.seed is None else base.seed + i}),
                strategy="fixed",
            )
            for i in range(request.n)
        ]
