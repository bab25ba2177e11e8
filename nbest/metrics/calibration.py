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

Used by the evaluation reports and by anything that checks a ranker's
confidence against outcomes (e.g. logged choices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nbest.types import NbestModel

__all__ = ["ReliabilityBin", "auroc", "expected_calibration_error", "prediction_rejection_ratio", "reliability"]


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
