"""Calibrating confidence: fit the ranker's softmax temperature on labelled data.

What the numbers in a Result mean
---------------------------------

``candidate.score``
    The combined reranker score: with one reranker its raw score, with several
    the weighted sum of each reranker's normalised score (z-score by default).
    Only its order means something; it is not a probability.

``candidate.scores[name]``
    Each reranker's raw score, in its own unit: mean log-probability per
    token, vote share (0-1), mean cosine similarity (-1..1), chrF/BLEU (0-100),
    judge rating (1-10) ...

``candidate.confidence``
    ``softmax(score / temperature)`` over the candidates that succeeded: the
    ranker's probability that *this candidate* is the best (correct) one. The
    confidences of a result sum to 1. With the default temperature 1 it is
    only probability-like; fitted with :func:`fit_temperature` on labelled
    examples of your task it is calibrated: among candidates given 0.7, about
    70% are correct.

``answer.confidence``
    The probability that *this answer* is right. With a vote reranker
    (MajorityVote) it is the answer's vote share (the fraction of candidates,
    or of their probability mass, that give it); otherwise it is the sum of
    its candidates' confidences.

Fitting
-------

A labelled example is the combined scores of one request's candidates and
which of them are correct. :func:`fit_temperature` finds the temperature that
minimises the log-loss ``-log(sum of the correct candidates' confidences)``,
averaged over the examples (examples with no correct candidate carry no
information about which candidate to trust and are skipped).
:func:`calibrate` runs a Ranker over labelled candidates first::

    fit = await calibrate(ranker, labelled)      # labelled: [(request, candidates, {correct indices})]
    ranker = Ranker(ranker.rerankers, weights=ranker.weights, temperature=fit.temperature)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from nbest.errors import ConfigError
from nbest.rerankers.ranker import Ranker
from nbest.types import Candidate, Request

__all__ = ["Calibration", "Example", "calibrate", "fit_temperature", "log_loss"]


@dataclass(frozen=True)
class Example:
    """One labelled request: its candidates' combined scores and the correct ones."""

    scores: Sequence[float]
    """Combined scores, one per candidate."""
    correct: Collection[int]
    """Positions (in ``scores``) of the correct candidates."""


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and how much it helped."""

    temperature: float
    """Use as ``Ranker(..., temperature=...)``."""
    log_loss_before: float
    """Mean log-loss at temperature 1."""
    log_loss_after: float
    """Mean log-loss at the fitted temperature (never above ``log_loss_before``)."""
    examples: int
    """Examples used (those with at least one correct candidate)."""


def _usable(examples: Sequence[Example]) -> list[Example]:
    usable = []
    for i, ex in enumerate(examples):
        if any(not 0 <= c < len(ex.scores) for c in ex.correct):
            raise ConfigError(
                f"examples[{i}]: correct positions {sorted(ex.correct)} outside 0..{len(ex.scores) - 1}",
                parameter="correct",
                value=sorted(ex.correct),
            )
        if any(not math.isfinite(s) for s in ex.scores):
            raise ConfigError(f"examples[{i}]: scores must be finite", parameter="scores")
        if ex.correct:
            usable.append(ex)
    return usable


def log_loss(examples: Sequence[Example], temperature: float = 1.0) -> float:
    """Mean ``-log P(correct)`` under ``softmax(scores / temperature)``.

    >>> round(log_loss([Example([0.0, math.log(3)], {1})]), 4)
    0.2877
    """
    if not temperature > 0:
        raise ConfigError("temperature: must be positive", parameter="temperature", value=temperature)
    usable = _usable(examples)
    if not usable:
        raise ConfigError("examples: need at least one example with a correct candidate", parameter="examples")
    total = 0.0
    for ex in usable:
        scaled = [s / temperature for s in ex.scores]
        top = max(scaled)
        log_z = top + math.log(math.fsum(math.exp(s - top) for s in scaled))
        top_c = max(scaled[c] for c in ex.correct)
        log_correct = top_c + math.log(math.fsum(math.exp(scaled[c] - top_c) for c in set(ex.correct)))
        total += log_z - log_correct
    return total / len(usable)


def fit_temperature(examples: Sequence[Example], *, bounds: tuple[float, float] = (1e-3, 1e3)) -> Calibration:
    """The softmax temperature that minimises the mean log-loss on ``examples``.

    Searched on a log scale within ``bounds`` (scipy's bounded scalar search).

    >>> exs = [Example([2.0, 0.0], {0}), Example([2.0, 0.0], {0}), Example([2.0, 0.0], {1})]
    >>> fit = fit_temperature(exs)
    >>> round(fit.temperature, 3), fit.log_loss_after < fit.log_loss_before
    (2.885, True)

    Raises:
        ConfigError: no usable example, bad bounds, correct positions out of range.
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ConfigError("bounds: need 0 < low < high", parameter="bounds", value=bounds)
    usable = _usable(examples)
    if not usable:
        raise ConfigError("examples: need at least one example with a correct candidate", parameter="examples")
    from scipy.optimize import minimize_scalar  # type: ignore[import-untyped]

    result = minimize_scalar(
        lambda log_t: log_loss(usable, math.exp(log_t)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    before = log_loss(usable, 1.0)
    temperature, after = math.exp(float(result.x)), float(result.fun)
    if before <= after:  # the search never does worse than the default
        temperature, after = 1.0, before
    return Calibration(temperature=temperature, log_loss_before=before, log_loss_after=after, examples=len(usable))


async def calibrate(ranker: Ranker, labelled: Sequence[tuple[Request, Sequence[Candidate], Collection[int]]]) -> Calibration:
    """Rank each labelled request's candidates with ``ranker``, then fit its temperature.

    ``labelled`` holds ``(request, candidates, correct)`` with ``correct`` the
    *indices* (``Candidate.index``) of the correct candidates.

    Raises:
        ConfigError: as :func:`fit_temperature`.
    """
    examples = []
    for request, candidates, correct in labelled:
        ranked = await ranker.rank(request, candidates)
        ok = [c for c in ranked.candidates if c.ok and c.score is not None]
        examples.append(Example([c.score or 0.0 for c in ok], {i for i, c in enumerate(ok) if c.index in correct}))
    return fit_temperature(examples)
