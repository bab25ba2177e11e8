"""The numbers an evaluation reports: calibration error, subsets, translation scores.

- :func:`expected_calibration_error` (Guo et al., 2017): predictions binned by
  confidence into ``bins`` equal-width bins over [0, 1]; the mean gap
  between each bin's accuracy and its mean confidence, weighted by the bin's
  share of predictions. 0 is perfectly calibrated.
- :func:`subsets`: which ``k`` of ``m`` candidates an "N = k" row looks at:
  every subset when there are at most ``count`` of them, else ``count``
  seeded random ones.
- :func:`corpus_chrf`, :func:`corpus_bleu`, :func:`sentence_chrf`: sacrebleu's
  chrF (Popović, 2015) and BLEU (Papineni et al., 2002), 0-100.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from nbest.types import NbestModel

__all__ = [
    "ReliabilityBin",
    "corpus_bleu",
    "corpus_chrf",
    "expected_calibration_error",
    "reliability",
    "sentence_chrf",
    "subsets",
]


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


def subsets(m: int, k: int, count: int, seed: str) -> list[tuple[int, ...]]:
    """Subsets of ``k`` of the indices ``0..m-1``: all of them if there are at
    most ``count``, else ``count`` distinct seeded random ones (sorted tuples).

    >>> subsets(3, 2, 5, "x")
    [(0, 1), (0, 2), (1, 2)]
    >>> subsets(8, 4, 3, "x") == subsets(8, 4, 3, "x")
    True
    """
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m} (got {k})")
    if math.comb(m, k) <= count:
        return list(itertools.combinations(range(m), k))
    rng = random.Random(seed)
    chosen: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        pick = tuple(sorted(rng.sample(range(m), k)))
        if pick not in seen:
            seen.add(pick)
            chosen.append(pick)
    return chosen


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100)."""
    from sacrebleu.metrics.chrf import CHRF

    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100)."""
    from sacrebleu.metrics.bleu import BLEU

    return float(BLEU().corpus_score(list(hypotheses), [list(references)]).score)


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (0-100)."""
    from sacrebleu.metrics.chrf import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)
