"""Online pruning: stop weak candidates while they generate (DeepConf online, on stock vLLM).

Fu et al. (2025), "Deep Think with Confidence": a few *warm-up* candidates are
generated in full; the lowest group confidence of each (the mean token
confidence over a sliding window of ``window`` tokens, its minimum over the
text: :mod:`nbest.rerankers.confidence`) sets a threshold, the ``1 - keep``
quantile of those values. Every later candidate of the request is watched
token by token, and as soon as its group confidence over a full window falls
below the threshold its engine request is aborted. The pruned candidate stays
in the Result with ``finish_reason="pruned"``, its partial text and its
signals; it does not vote.

``keep`` is the share of warm-up-like candidates expected to survive:
DeepConf-high keeps 0.9 (mild pruning), DeepConf-low keeps 0.1 (aggressive).

>>> parse_prune("0.9")
Prune(keep=0.9, warmup=4, window=16)
>>> parse_prune("low:8")
Prune(keep=0.1, warmup=8, window=16)
>>> parse_prune("0.5:4:32")
Prune(keep=0.5, warmup=4, window=32)
"""

from __future__ import annotations

from dataclasses import dataclass

from nbest.errors import ConfigError

__all__ = ["PRESETS", "Prune", "parse_prune"]

PRESETS = {"high": 0.9, "low": 0.1}
"""DeepConf's two settings by name: the share of candidates kept."""

MAX_WARMUP = 64
MAX_WINDOW = 2048


@dataclass(frozen=True)
class Prune:
    """A pruning policy (see the module docstring).

    Args:
        keep: in (0, 1]: the threshold is the ``1 - keep`` quantile of the
            warm-up candidates' lowest group confidence (1: the lowest of them).
        warmup: candidates generated in full first (the first ``warmup`` of the
            plan, in plan order); at least 1. A request with ``n <= warmup`` is
            not pruned.
        window: tokens per group confidence (a candidate is judged once it has a
            full window).

    Raises:
        ConfigError: a value out of range, naming it.
    """

    keep: float = 0.9
    warmup: int = 4
    window: int = 16

    def __post_init__(self) -> None:
        keep = self.keep
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ConfigError(f"prune.keep: must be a share in (0, 1] (got {keep!r})", parameter="prune.keep", value=keep)
        object.__setattr__(self, "keep", float(keep))
        for name, top in (("warmup", MAX_WARMUP), ("window", MAX_WINDOW)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ConfigError(
                    f"prune.{name}: must be a whole number from 1 to {top} (got {value!r})",
                    parameter=f"prune.{name}",
                    value=value,
                )

    def __str__(self) -> str:
        """The short form :func:`parse_prune` reads back."""
        return f"{self.keep:g}:{self.warmup}:{self.window}"


def parse_prune(text: str) -> Prune:
    """A pruning policy from its short form ``KEEP[:WARMUP[:WINDOW]]``; ``KEEP`` is a
    share in (0, 1] or ``high`` (0.9) / ``low`` (0.1).

    Raises:
        ConfigError: naming what is wrong and the form allowed.
    """
    form = "KEEP[:WARMUP[:WINDOW]], e.g. 0.9, low:8 or 0.5:4:32 (KEEP in (0, 1] or high/low)"
    if not isinstance(text, str) or len(text) > 64:
        raise ConfigError(f"prune: expected {form}", parameter="prune", value=text)
    parts = text.strip().lower().split(":")
    if len(parts) > 3 or not parts[0]:
        raise ConfigError(f"prune: expected {form} (got {text!r})", parameter="prune", value=text)
    try:
        keep = PRESETS[parts[0]] if parts[0] in PRESETS else float(parts[0])
        numbers = [int(part) for part in parts[1:]]
    except ValueError:
        raise ConfigError(f"prune: expected {form} (got {text!r})", parameter="prune", value=text) from None
    return Prune(keep, *numbers)
