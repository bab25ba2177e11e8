"""The three classic truncation samplers as strategies: ``Nucleus`` (top-p),
``TopK`` and ``MinP``. Each sets its sampler on every candidate, keeps the
request's other settings (or the given ``temperature``), and gives candidate
``i`` seed ``seed + i``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from nbest.strategies.base import SamplingStrategy, derive, overrides, positional, register, seed_for, short_number
from nbest.types import CandidateSpec, Request

__all__ = ["MinP", "Nucleus", "TopK"]


class _Sampler(SamplingStrategy):
    """A fixed sampler setting plus an optional temperature."""

    temperature: float | None = Field(default=None)
    """Temperature of every candidate; None keeps the request's."""
    sampler_fields: ClassVar[tuple[str, ...]] = ()
    short_example: ClassVar[str] = ""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        """``KIND:VALUE`` sets the sampler (``nucleus:0.9``, ``topk:40``, ``minp:0.05``); ``KIND`` alone: its default."""
        if not arg:
            return cls.parse({})
        field = cls.sampler_fields[0]
        convert = int if field == "top_k" else float
        return cls.parse({field: short_number(arg, arg, cls.short_example, convert)})

    @model_validator(mode="after")
    def _check_settings(self) -> Self:
        overrides(self, ("temperature", *self.sampler_fields))
        return self

    def plan(self, request: Request) -> list[CandidateSpec]:
        base = request.params
        update = overrides(self, ("temperature", *self.sampler_fields))
        return [
            CandidateSpec(index=i, engine=self.engine, params=derive(base, **update, seed=seed_for(base, i)), strategy=self.kind)
            for i in range(request.n)
        ]


@register("nucleus")
class Nucleus(_Sampler):
    """Nucleus (top-p) sampling: each token is drawn from the smallest set of
    tokens whose probabilities sum to ``top_p``.

    >>> from nbest.types import Request, SamplingParams
    >>> [(s.params.top_p, s.params.seed) for s in Nucleus(0.9).plan(Request(prompt="Hi", n=2, params=SamplingParams(seed=5)))]
    [(0.9, 5), (0.9, 6)]

    Raises:
        ConfigError: ``top_p`` not in (0, 1].
    """

    kind: Literal["nucleus"] = "nucleus"
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    """Probability mass kept at each step."""
    sampler_fields: ClassVar[tuple[str, ...]] = ("top_p",)
    short_example: ClassVar[str] = "nucleus:0.9"
    short_help: ClassVar[str] = "nucleus:P"

    def __init__(self, top_p: float | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, top_p=top_p))


@register("topk")
class TopK(_Sampler):
    """Top-k sampling: each token is drawn from the ``top_k`` most likely ones.

    Raises:
        ConfigError: ``top_k`` below 1.
    """

    kind: Literal["topk"] = "topk"
    top_k: int = Field(default=40, ge=1)
    """How many of the most likely tokens are kept at each step."""
    sampler_fields: ClassVar[tuple[str, ...]] = ("top_k",)
    short_example: ClassVar[str] = "topk:40"
    short_help: ClassVar[str] = "topk:K"

    def __init__(self, top_k: int | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, top_k=top_k))


@register("minp")
class MinP(_Sampler):
    """Min-p sampling: drop tokens less likely than ``min_p`` times the most
    likely one; it adapts the cut to the model's confidence, so it stays
    coherent at higher temperatures.

    Raises:
        ConfigError: ``min_p`` not in (0, 1].
    """

    kind: Literal["minp"] = "minp"
    min_p: float = Field(default=0.05, gt=0.0, le=1.0)
    """Fraction of the top token's probability a token needs to be kept."""
    sampler_fields: ClassVar[tuple[str, ...]] = ("min_p",)
    short_example: ClassVar[str] = "minp:0.05"
    short_help: ClassVar[str] = "minp:P"

    def __init__(self, min_p: float | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, min_p=min_p))
