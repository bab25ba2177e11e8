"""Calibration measures: is a confidence of 0.8 right 80 % of the time?

- :func:`expected_calibration_error` (Guo et al., 2017): predictions binned by
  confidence into ``bins`` equal-width bins over [0, 1]; the mean gap
  between each bin's accuracy and its mean confidence, weighted by the bin's
  share of predictions. 0 is perfectly calibrated.
- :func:`reliability`: the bins themselves (a reliability diagram).

Used by the evaluation reports and by anything that checks a ranker's
confidence against outcomes (e.g. logged choices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nbest.types import NbestModel

__all__ = ["ReliabilityBin", "expected_calibration_error", "reliability"]


class ReliabilityBin(NbestModel):
    """One bar of a reliability diagram."""

    low: float
    high: float
    count: int
    """Predictions whose confidence falls in [low, high) ([low, 1] for the last bin)."""
    confidence: float | None
    """Their mean confidence (None for an empty bin)."""
    accuracy: float | None
    """The fraction of them that were right (None for an empty bin)."""


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Predictions binned by confidence (equal-width bins over [0, 1]).

    >>> [(b.count, b.accuracy) for b in reliability([0.1, 0.9, 0.95], [False, True, False], bins=2)]
    [(1, 0.0), (2, 0.5)]
    """
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        members[min(int(c * bins), bins - 1) if c > 0 else 0].append(i)
    out = []
    for b, idx in enumerate(members):
        out.append(
            ReliabilityBin(
                low=b / bins,
                high=(b + 1) / bins,
                count=len(idx),
                confidence=math.fsum(confidences[i] for i in idx) / len(idx) if idx else None,
                accuracy=sum(bool(correct[i]) for i in idx) / len(idx) if idx else None,
            )
        )
    return out


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float | None:
    """ECE over equal-width bins; None without predictions.

    >>> expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True], bins=10)
    0.4
    """
    if not confidences:
        return None
    total = len(confidences)
    gap = math.fsum(
        b.count / total * abs(b.accuracy - b.confidence)
        for b in reliability(confidences, correct, bins)
        if b.accuracy is not None and b.confidence is not None
    )
    return round(gap, 12)
