"""``GreedyPlusSamples``: a greedy baseline followed by sampled candidates."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from nbest.strategies.base import SamplingStrategy, derive, overrides, register, seed_for, short_number
from nbest.types import CandidateSpec, Request

__all__ = ["GreedyPlusSamples"]

_SAMPLE_FIELDS = ("temperature", "top_p", "top_k", "min_p")


@register("greedy_plus_samples", aliases=("greedy+",))
class GreedyPlusSamples(SamplingStrategy):
    """Candidate 0 is decoded greedily (temperature 0), the others are sampled
    with the request's settings, or with the ones given here. The common
    "greedy baseline + samples" set-up: the greedy answer is always in the list.

    >>> from nbest.types import Request, SamplingParams
    >>> plan = GreedyPlusSamples(temperature=0.8).plan(Request(prompt="Hi", n=3, params=SamplingParams(seed=1)))
    >>> [(s.strategy, s.params.temperature, s.params.seed) for s in plan]
    [('greedy', 0.0, 1), ('sample', 0.8, 2), ('sample', 0.8, 3)]

    Raises:
        ConfigError: a sampling setting out of range.
    """

    kind: Literal["greedy_plus_samples"] = "greedy_plus_samples"
    temperature: float | None = Field(default=None)
    """Temperature of the sampled candidates; None keeps the request's."""
    top_p: float | None = None
    """top_p of the sampled candidates; None keeps the request's."""
    top_k: int | None = None
    """top_k of the sampled candidates; None keeps the request's."""
    min_p: float | None = None
    """min_p of the sampled candidates; None keeps the request's."""

    short_help: ClassVar[str] = "greedy+[:T]"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        """``greedy+`` or ``greedy+:0.8`` (the samples' temperature)."""
        return cls(temperature=short_number(arg, arg, "greedy+:0.8")) if arg else cls()

    @model_validator(mode="after")
    def _check_settings(self) -> Self:
        overrides(self, _SAMPLE_FIELDS)
        return self

    def plan(self, request: Request) -> list[CandidateSpec]:
        base = request.params
        sampled = overrides(self, _SAMPLE_FIELDS)
        specs = [
            CandidateSpec(
                index=0, engine=self.engine, params=derive(base, temperature=0.0, seed=seed_for(base, 0)), strategy="greedy"
            )
        ]
        specs += [
            CandidateSpec(index=i, engine=self.engine, params=derive(base, **sampled, seed=seed_for(base, i)), strategy="sample")
            for i in range(1, request.n)
        ]
        return specs
