"""``Grid``: the Cartesian product of sampling settings, cycled or sampled to fill N."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

from pydantic import model_validator

from nbest.errors import ConfigError
from nbest.strategies.base import (
    SamplingStrategy,
    check_items,
    derive,
    register,
    seed_for,
    seeded_rng,
    short_number,
)
from nbest.types import CandidateSpec, Request, SamplingParams

__all__ = ["Grid"]

_AXES = ("temperature", "top_p", "top_k", "min_p")
_SHORT = {"temperature": "t", "top_p": "p", "top_k": "k", "min_p": "m"}


_GRID_AXES = {"t": "temperature", "temperature": "temperature", "p": "top_p", "top_p": "top_p", "k": "top_k", "top_k": "top_k",
              "m": "min_p", "min_p": "min_p"}  # fmt: skip


@register("grid")
class Grid(SamplingStrategy):
    """Every combination of the given values (``temperature`` varies slowest,
    ``min_p`` fastest); settings left out keep the request's value.

    ``fill="cycle"`` walks the combinations in order and starts over;
    ``fill="sample"`` draws them without replacement in an order seeded from
    the request seed, every combination once before any repeats. Only the
    ``n`` combinations a plan uses are built (by index over the axes), so a
    large grid costs no more to plan than a small one.

    >>> from nbest.types import Request, SamplingParams
    >>> plan = Grid(temperature=[0.5, 1.0], top_p=[0.9, 1.0]).plan(Request(prompt="Hi", n=5, params=SamplingParams(seed=0)))
    >>> [s.strategy for s in plan]
    ['grid[t=0.50,p=0.90]', 'grid[t=0.50,p=1.00]', 'grid[t=1.00,p=0.90]', 'grid[t=1.00,p=1.00]', 'grid[t=0.50,p=0.90]']

    Raises:
        ConfigError: no axis given, an empty axis, more than ``MAX_ITEMS``
            values on an axis, or a value out of range.
    """

    kind: Literal["grid"] = "grid"
    temperature: list[float] | None = None
    """Temperatures to try (0 is greedy)."""
    top_p: list[float] | None = None
    """top_p values to try, each in (0, 1]."""
    top_k: list[int] | None = None
    """top_k values to try (-1 = off)."""
    min_p: list[float] | None = None
    """min_p values to try, each in [0, 1]."""
    fill: Literal["cycle", "sample"] = "cycle"
    """How the combinations fill N candidates: in order (``cycle``) or in a
    seeded random order without replacement (``sample``)."""

    short_help: ClassVar[str] = "grid:t=..;p=..;k=..;m=..[;fill=sample]"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        """``grid:t=0.5,1.0;p=0.9,1.0`` (axes t, p, k, m, or their full names; ``;fill=sample``).

        >>> Grid.from_short("k=10,40;fill=sample").top_k
        [10, 40]
        """
        options: dict[str, Any] = {}
        example = "grid:t=0.5,1.0;p=0.9,1.0"
        for part in filter(None, (p.strip() for p in arg.split(";"))):
            key, sep, values = part.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"expected KEY=VALUES in {part!r}, e.g. {example}", parameter="strategy", value=arg)
            if key == "fill":
                options["fill"] = values.strip()
                continue
            axis = _GRID_AXES.get(key)
            if axis is None:
                raise ConfigError(
                    f"unknown grid axis {key!r}; use t (temperature), p (top_p), k (top_k), m (min_p) or fill",
                    parameter="strategy",
                    value=arg,
                )
            if axis in options:
                raise ConfigError(f"grid axis {axis} given twice", parameter="strategy", value=arg)
            convert: Callable[[str], Any] = int if axis == "top_k" else float
            options[axis] = [short_number(arg, v, example, convert) for v in values.split(",") if v.strip()]
        return cls(**options)

    @model_validator(mode="after")
    def _check(self) -> Self:
        given = [axis for axis in _AXES if getattr(self, axis) is not None]
        if not given:
            raise ConfigError("grid: give at least one of temperature, top_p, top_k, min_p", parameter="grid")
        for axis in given:
            values = getattr(self, axis)
            if not values:
                raise ConfigError(
                    f"{axis}: an empty grid axis; give at least one value or leave it out", parameter=axis, value=values
                )
            check_items(values, axis)
            for i, value in enumerate(values):
                try:
                    SamplingParams(**{axis: value})
                except ConfigError as exc:
                    raise ConfigError(
                        f"{axis}[{i}]{str(exc).removeprefix(axis)}", parameter=f"{axis}[{i}]", value=value
                    ) from None
        return self

    def size(self) -> int:
        """How many combinations the grid has."""
        return math.prod(len(getattr(self, axis)) for axis in _AXES if getattr(self, axis) is not None)

    def point(self, k: int) -> dict[str, Any]:
        """Combination ``k`` in cycle order (``temperature`` slowest, ``min_p`` fastest).

        >>> Grid(temperature=[0.5, 1.0], top_k=[10, 20, 40]).point(4)
        {'temperature': 1.0, 'top_k': 20}
        """
        axes = [axis for axis in _AXES if getattr(self, axis) is not None]
        point: dict[str, Any] = {}
        for axis in reversed(axes):
            values = getattr(self, axis)
            k, i = divmod(k, len(values))
            point[axis] = values[i]
        return {axis: point[axis] for axis in axes}

    def combinations(self) -> list[dict[str, Any]]:
        """The grid's points, in cycle order (all of them: mind :meth:`size`)."""
        return [self.point(k) for k in range(self.size())]

    def order(self, request: Request) -> list[int]:
        """Which combination each of the ``request.n`` candidates gets."""
        total, n = self.size(), request.n
        if self.fill == "cycle":
            return [i % total for i in range(n)]
        rng = seeded_rng(request, "grid")
        if total >= n and total > 4096:  # a large grid: draw the n indices, nothing else
            return rng.sample(range(total), n)
        order: list[int] = []
        while len(order) < n:
            order += rng.sample(range(total), total)
        return order[:n]

    def plan(self, request: Request) -> list[CandidateSpec]:
        order = [self.point(k) for k in self.order(request)]
        base = request.params
        return [
            CandidateSpec(
                index=i, engine=self.engine, params=derive(base, **point, seed=seed_for(base, i)), strategy=_label(point)
            )
            for i, point in enumerate(order)
        ]


def _label(point: dict[str, Any]) -> str:
    parts = [f"{_SHORT[axis]}={value}" if axis == "top_k" else f"{_SHORT[axis]}={value:.2f}" for axis, value in point.items()]
    return f"grid[{','.join(parts)}]"
