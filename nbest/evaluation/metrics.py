"""The numbers an evaluation reports: subsets, translation scores.

- calibration error and reliability bins: :mod:`nbest.metrics.calibration`.
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

__all__ = [
    "corpus_bleu",
    "corpus_chrf",
    "sentence_chrf",
    "subsets",
]


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
