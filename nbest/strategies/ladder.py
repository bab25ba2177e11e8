"""``TemperatureLadder``: temperatures spread over ``[low, high]``, one per candidate."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from nbest.errors import ConfigError
from nbest.strategies.base import SamplingStrategy, derive, positional, register, seed_for, short_number
from nbest.types import MIN_TEMPERATURE, CandidateSpec, Request

__all__ = ["TemperatureLadder"]


@register("ladder")
class TemperatureLadder(SamplingStrategy):
    """Candidate temperatures spread evenly (``linear``) or by a constant ratio
    (``geometric``) from ``low`` to ``high``; with ``greedy_first``, candidate 0
    is greedy and the ladder spans the rest. Other settings come from the
    request; candidate ``i`` gets seed ``seed + i``.

    >>> from nbest.types import Request, SamplingParams
    >>> plan = TemperatureLadder(0.2, 1.0).plan(Request(prompt="Hi", n=5, params=SamplingParams(seed=0)))
    >>> [s.params.temperature for s in plan]
    [0.2, 0.4, 0.6, 0.8, 1.0]
    >>> plan[2].strategy
    'ladder[t=0.60]'

    Raises:
        ConfigError: ``low``/``high`` below 0 or in (0, 0.01), ``low > high``,
            or geometric spacing from ``low = 0``.
    """

    kind: Literal["ladder"] = "ladder"
    low: float = Field(default=0.3, ge=0.0)
    """Coldest temperature (0 is greedy)."""
    high: float = Field(default=1.2, ge=0.0)
    """Hottest temperature."""
    spacing: Literal["linear", "geometric"] = "linear"
    """``linear``: equal steps; ``geometric``: equal ratios (needs ``low > 0``)."""
    greedy_first: bool = False
    """Make candidate 0 greedy (temperature 0) and spread the ladder over the others."""

    short_help: ClassVar[str] = "ladder:LOW-HIGH[,geometric][,greedy]"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        """``ladder:0.2-1.2[,geometric][,greedy]``; ``ladder`` alone: the defaults.

        >>> TemperatureLadder.from_short("0.25-2,geometric")
        TemperatureLadder(kind='ladder', engine='default', low=0.25, high=2.0, spacing='geometric', greedy_first=False)
        """
        if not arg:
            return cls()
        bounds, *flags = [part.strip() for part in arg.split(",")]
        low, sep, high = bounds.partition("-")
        if not sep:
            raise ConfigError("expected ladder:LOW-HIGH, e.g. ladder:0.2-1.2", parameter="strategy", value=arg)
        options: dict[str, Any] = {}
        for flag in flags:
            if flag == "geometric":
                options["spacing"] = "geometric"
            elif flag == "greedy":
                options["greedy_first"] = True
            else:
                raise ConfigError(f"unknown ladder option {flag!r}; use geometric or greedy", parameter="strategy", value=arg)
        example = "ladder:0.2-1.2"
        return cls(short_number(arg, low, example), short_number(arg, high, example), **options)

    def __init__(self, low: float | None = None, high: float | None = None, /, **data: Any) -> None:
        super().__init__(**positional(data, low=low, high=high))

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("low", "high"):
            value = getattr(self, name)
            if 0.0 < value < MIN_TEMPERATURE:
                raise ConfigError(
                    f"{name}: must be 0 (greedy) or at least {MIN_TEMPERATURE} (got {value})", parameter=name, value=value
                )
        if self.low > self.high:
            raise ConfigError(f"low: must be <= high (got low={self.low}, high={self.high})", parameter="low", value=self.low)
        if self.spacing == "geometric" and self.low == 0.0:
            raise ConfigError(
                "low: geometric spacing needs low > 0 (use linear spacing, or greedy_first for a greedy candidate)",
                parameter="low",
                value=self.low,
            )
        return self

    def temperatures(self, n: int) -> list[float]:
        """The ``n`` temperatures of the ladder, coldest first.

        >>> TemperatureLadder(0.5, 2.0, spacing="geometric").temperatures(3)
        [0.5, 1.0, 2.0]
        """
        head = [0.0] if self.greedy_first and n > 0 else []
        m = n - len(head)
        if m <= 0:
            return head
        if m == 1:
            return [*head, self.low]
        steps = [i / (m - 1) for i in range(m)]
        if self.spacing == "geometric":
            ratio = self.high / self.low
            rungs = [self.low * ratio**f for f in steps]
        else:
            rungs = [self.low + (self.high - self.low) * f for f in steps]
        return head + [round(t, 6) for t in rungs]

    def plan(self, request: Request) -> list[CandidateSpec]:
        base = request.params
        specs = []
        for i, t in enumerate(self.temperatures(request.n)):
            label = "ladder[greedy]" if self.greedy_first and i == 0 else f"ladder[t={t:.2f}]"
            params = derive(base, temperature=t, seed=seed_for(base, i))
            specs.append(CandidateSpec(index=i, engine=self.engine, params=params, strategy=label))
        return specs
