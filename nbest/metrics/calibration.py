"""Calibration measures: is a confidence of 0.8 right 80 % of the time?

- :func:`expected_calibration_error` (Guo et al., 2017): predictions binned by
  confidence into ``bins`` equal-width bins over [0, 1]; the mean gap
  between each bin's accuracy and its mean confidence, weighted by the bin's
  share of predictions. 0 is perfectly calibrated.
- :func:`reliability`: the bins themselves (a reliability diagram).
- :func:`auroc`: discrimination, not calibration: the probability that a right
  prediction has a higher confidence than a wrong one (ties count half).
- :func:`prediction_rejection_ratio` (PRR; Malinin et al., 2017): how much of
  what a perfect confidence would gain by rejecting the least confident
  predictions this confidence gains (1 perfect, 0 random, below 0 worse).
- :func:`ece_interval`: how noisy an ECE is. On a hundred predictions with ten
  bins the figure moves by hundredths from one draw of prompts to the next (a
  perfectly calibrated predictor scores several hundredths), so a 0.05 goal
  read on one set needs the percentile bootstrap interval beside it.

Used by the evaluation reports and by anything that checks a ranker's
confidence against outcomes (e.g. logged choices).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

from pydantic import Field

from nbest.errors import ConfigError
from nbest.types import NbestModel

__all__ = [
    "MAX_BOOTSTRAP_WORK",
    "Interval",
    "ReliabilityBin",
    "auroc",
    "ece_interval",
    "expected_calibration_error",
    "prediction_rejection_ratio",
    "reliability",
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


def _check(confidences: Sequence[float], correct: Sequence[bool]) -> None:
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")


def auroc(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Area under the ROC curve of the confidence as a detector of right predictions.

    The Mann-Whitney statistic: over every (right, wrong) pair of predictions,
    the share where the right one has the higher confidence, a tie counting
    half. 1: every right prediction is more confident than every wrong one;
    0.5: the confidence tells nothing. None when every prediction is right or
    every one is wrong (no pair to compare).

    >>> auroc([0.9, 0.8, 0.3, 0.2], [True, False, True, False])
    0.75
    >>> auroc([0.5, 0.5], [True, False]), auroc([0.9, 0.1], [True, True])
    (0.5, None)

    Raises:
        ValueError: the two sequences differ in length.
    """
    _check(confidences, correct)
    right = sum(bool(c) for c in correct)
    wrong = len(correct) - right
    if right == 0 or wrong == 0:
        return None
    # ranks with ties averaged: sum of the right predictions' ranks gives the pairs they win
    order = sorted(range(len(confidences)), key=lambda i: confidences[i])
    rank_sum = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and confidences[order[end + 1]] == confidences[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        rank_sum += mean_rank * sum(bool(correct[order[i]]) for i in range(start, end + 1))
        start = end + 1
    return round((rank_sum - right * (right + 1) / 2) / (right * wrong), 12)


def _rejection_area(order_groups: list[list[int]], correct: Sequence[bool]) -> float:
    """Mean accuracy of the kept predictions when the first j (j = 0 .. n-1) are
    rejected in the order of ``order_groups`` (ties within a group in random order:
    their expected accuracy)."""
    n = len(correct)
    right_total = sum(bool(c) for c in correct)
    area = 0.0
    rejected = 0
    rejected_right = 0.0
    for group in order_groups:
        share = sum(bool(correct[i]) for i in group) / len(group)
        for _ in group:
            if rejected < n:
                area += (right_total - rejected_right) / (n - rejected)
            rejected += 1
            rejected_right += share
    return area / n


def prediction_rejection_ratio(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """PRR: the rejection curve of the confidence against random and perfect rejection.

    Reject the j least confident of the n predictions (j = 0, 1, ..., n-1) and
    measure the accuracy of the n - j kept; the area under that curve is its
    mean over j, ``A_conf``. Rejecting at random keeps the overall accuracy,
    ``A_random``; rejecting every wrong prediction first gives ``A_oracle``.

        PRR = (A_conf - A_random) / (A_oracle - A_random)

    Tied confidences are rejected in random order (their expected accuracy
    counts), so a constant confidence scores 0. 1: the confidence rejects
    exactly the wrong predictions first; below 0: worse than random. None when
    every prediction is right or every one is wrong (then A_oracle = A_random).

    >>> round(prediction_rejection_ratio([0.9, 0.8, 0.3, 0.2], [True, False, True, False]), 4)  # 4/7
    0.5714
    >>> prediction_rejection_ratio([0.2, 0.9], [False, True]), prediction_rejection_ratio([0.5, 0.5], [True, False])
    (1.0, 0.0)

    Raises:
        ValueError: the two sequences differ in length.
    """
    _check(confidences, correct)
    right = sum(bool(c) for c in correct)
    if right == 0 or right == len(correct):
        return None
    ascending = sorted(range(len(confidences)), key=lambda i: confidences[i])
    groups: list[list[int]] = []
    for i in ascending:
        if groups and confidences[groups[-1][0]] == confidences[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    area = _rejection_area(groups, correct)
    randomly = right / len(correct)
    oracle = _rejection_area([[i] for i in sorted(range(len(correct)), key=lambda i: bool(correct[i]))], correct)
    return round((area - randomly) / (oracle - randomly), 12) + 0.0  # + 0.0: no -0.0


MAX_BOOTSTRAP_WORK = 10**8
"""Most (resample, prediction) pairs :func:`ece_interval` looks at: about a second of
array work; a larger input asks for fewer resamples rather than running for minutes."""
MAX_RESAMPLES = 100_000
_BLOCK = 2**21
"""(resample, prediction) pairs held in memory at once (16 MiB of weights)."""


class Interval(NbestModel):
    """A bootstrap interval of a measure."""

    low: float
    high: float
    level: float = Field(gt=0.0, lt=1.0)
    """Its coverage (0.9: the 5th to the 95th percentile of the resampled measure)."""
    resamples: int = Field(ge=1)


def ece_interval(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    bins: int = 10,
    groups: Sequence[Hashable] | None = None,
    resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> Interval | None:
    """Bootstrap interval of :func:`expected_calibration_error`; None without predictions.

    Each resample draws as many groups as there are, with replacement, and scores the
    ECE of their predictions (a group drawn twice counts twice). ``groups`` names each
    prediction's group, e.g. its prompt when a prompt gave several predictions (subsets
    of its candidates), which are not independent; without it every prediction is its
    own group. The same ``seed`` gives the same interval.

    The ECE of a resample is biased upward (a resample repeats predictions, so its bins
    are noisier): for a calibrated confidence on a hundred predictions nearly every
    resample scores above the estimate, and a plain percentile interval would lie wholly
    above it. The interval is therefore the percentiles of the resampled ECE shifted by
    that bias (their mean minus the estimate; Efron and Tibshirani, 1993, ch. 10), floored
    at 0: how far the figure moves from one draw of prompts to another, around the figure.

    >>> c, y = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2] * 10, [True, True, False, True, False, False] * 10
    >>> i = ece_interval(c, y, resamples=200, seed=1)
    >>> i.low <= expected_calibration_error(c, y) <= i.high
    True

    Raises:
        ConfigError: sequences of different lengths (``correct``, ``groups``), a
            confidence outside [0, 1] (``confidences``), ``bins``, ``resamples`` or
            ``level`` out of range, or more than :data:`MAX_BOOTSTRAP_WORK` resampled
            predictions (``resamples``: ask for fewer).
    """
    import numpy as np

    n = len(confidences)
    if len(correct) != n:
        raise ConfigError(f"correct: {len(correct)} outcomes for {n} confidences", parameter="correct")
    if groups is not None and len(groups) != n:
        raise ConfigError(f"groups: {len(groups)} groups for {n} confidences", parameter="groups")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1000:
        raise ConfigError(f"bins: must be an integer in [1, 1000] (got {bins!r})", parameter="bins", value=bins)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or not 1 <= resamples <= MAX_RESAMPLES:
        raise ConfigError(f"resamples: must be an integer in [1, {MAX_RESAMPLES}] (got {resamples!r})",
                          parameter="resamples", value=resamples)  # fmt: skip
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ConfigError(f"level: must lie strictly between 0 and 1 (got {level!r})", parameter="level", value=level)
    if n * resamples > MAX_BOOTSTRAP_WORK:
        raise ConfigError(f"resamples: {resamples} resamples of {n} predictions is over {MAX_BOOTSTRAP_WORK:.0e}; "
                          f"at most {max(1, MAX_BOOTSTRAP_WORK // max(n, 1))} for this input",
                          parameter="resamples", value=resamples)  # fmt: skip
    if n == 0:
        return None
    conf = np.asarray(confidences, dtype=float)
    if not np.all((conf >= 0.0) & (conf <= 1.0)):  # NaN fails too
        raise ConfigError("confidences: must lie in [0, 1]", parameter="confidences")
    right = np.asarray([bool(x) for x in correct], dtype=float)
    members = np.where(conf > 0, np.minimum((conf * bins).astype(int), bins - 1), 0)  # as reliability() bins them
    if groups is None:
        group_of = np.arange(n)
    else:
        ids: dict[Hashable, int] = {}
        group_of = np.asarray([ids.setdefault(g, len(ids)) for g in groups])
    count = int(group_of.max()) + 1
    onehot = np.zeros((n, bins))
    onehot[np.arange(n), members] = 1.0
    gap_per_point = onehot * (right - conf)[:, None]  # a bin's |sum(right) - sum(conf)| / total is its ECE share
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // n)
    eces = []
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        drawn = rng.multinomial(count, np.full(count, 1.0 / count), size=size)  # times each group is drawn
        weights = drawn[:, group_of].astype(float)
        eces.append(np.abs(weights @ gap_per_point).sum(axis=1) / weights.sum(axis=1))
    values = np.concatenate(eces)
    point = _ece(conf, right, members, bins)
    shift = float(values.mean()) - point  # the resampling's own upward bias
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail]) - shift
    return Interval(low=round(max(0.0, float(low)), 12), high=round(max(0.0, float(high)), 12), level=level,
                    resamples=resamples)  # fmt: skip


def _ece(conf: Any, right: Any, members: Any, bins: int) -> float:
    """The ECE of the predictions as given (each once), from their bins."""
    import numpy as np

    gaps = np.bincount(members, weights=right - conf, minlength=bins)
    return float(np.abs(gaps).sum() / len(conf))
