"""The typed evaluation report (``--report PATH`` writes it as JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nbest.evaluation.calibration import ConfidenceMap
from nbest.metrics.calibration import Interval, ReliabilityBin
from nbest.types import NbestModel

__all__ = ["DiversityLevel", "EvalReport", "ItemReport", "Level", "Quality", "RerankerLevel"]


class Quality(NbestModel):
    """How good the chosen candidates are: accuracy for answer tasks, chrF/BLEU for translation."""

    accuracy: float | None = None
    """Fraction of prompts answered right (0-1)."""
    chrf: float | None = None
    """Corpus chrF against the references (0-100)."""
    bleu: float | None = None
    """Corpus BLEU against the references (0-100)."""


class RerankerLevel(NbestModel):
    """One reranker choosing among N candidates."""

    quality: Quality
    """Of its top-ranked candidate, averaged over the subsets."""
    ece: float | None = None
    """Expected calibration error of the top answer's confidence (accuracy tasks)."""
    ece_interval: Interval | None = None
    """90 % bootstrap interval of ``ece`` over the prompts (1,000 resamples): how far
    another draw of as many prompts could move it."""
    fitted_temperature: float | None = None
    """The temperature ``T`` that calibrates that confidence on these prompts
    (``sigmoid(logit(c) / T)``, :mod:`nbest.evaluation.calibration`). None when every
    answer is right or every one wrong. Kept beside ``fitted_calibration`` for readers of
    older reports; ``--calibration`` carries the map when a report holds one."""
    fitted_calibration: ConfidenceMap | None = None
    """The regularised Platt map (``sigmoid(scale * logit(c) + bias)``) that calibrates
    that confidence on these prompts: fitted on a tuning split, it is what
    ``--calibration`` carries to a held-out run. From N = 4 on it is one map, fitted on
    the answers of every such N together (:data:`~nbest.evaluation.evaluate.SHARED_FROM`).
    None as for ``fitted_temperature``."""
    applied_temperature: float | None = None
    """The temperature given from elsewhere (``--calibration`` with a report holding
    temperatures only), when one was."""
    applied_calibration: ConfidenceMap | None = None
    """The Platt map given from elsewhere (``--calibration``), when one was."""
    ece_calibrated: float | None = None
    """ECE of the confidence after ``applied_calibration`` (or ``applied_temperature``)."""
    ece_calibrated_interval: Interval | None = None
    """90 % bootstrap interval of ``ece_calibrated``, as ``ece_interval``."""
    reliability: list[ReliabilityBin] = Field(default_factory=list)
    """The reliability diagram behind ``ece``."""
    auroc: float | None = None
    """How well the same confidence tells its right answers from its wrong ones: the chance
    that a right one is more confident than a wrong one (0.5: no better than chance;
    :func:`~nbest.metrics.calibration.auroc`). None when every answer is right or every one wrong."""
    prr: float | None = None
    """Prediction-rejection ratio of that confidence (1: rejecting the least confident answers
    drops the wrong ones first, 0: no better than random;
    :func:`~nbest.metrics.calibration.prediction_rejection_ratio`). None as for ``auroc``."""
    tokens: float = 0.0
    """Completion tokens of the candidates it chose among, per prompt (averaged over the
    subsets): every candidate the Result lists counts, failed, stopped or unused ones too."""
    engine_s: float | None = None
    """Engine wall time for those tokens: the run's generation time (``EvalReport.generate_s``)
    times their share of every generated token. An estimate, as the candidates of all N were
    generated together; None when the generation time is unknown."""


class DiversityLevel(NbestModel):
    """Diversity of N candidates, averaged over prompts and subsets."""

    distinct_1: float
    distinct_2: float
    self_bleu: float | None = None
    """0-100, lower is more diverse; None for N = 1."""


class Level(NbestModel):
    """Everything measured with N candidates per prompt."""

    n: int
    """Candidates per prompt."""
    subsets: int
    """Subsets of N candidates looked at per prompt (all of them, or that many seeded random ones)."""
    oracle: Quality
    """If a perfect reranker picked: accuracy = some candidate is right; chrF/BLEU of the
    candidate with the best sentence chrF."""
    diversity: DiversityLevel
    rerankers: dict[str, RerankerLevel]
    """By reranker name (``combined``: all of them with their weights)."""


class ItemReport(NbestModel):
    """One prompt's candidates, as judged."""

    id: str
    gold: list[str] | None = None
    reference: str | None = None
    answers: list[str | None] = Field(default_factory=list)
    """Each candidate's extracted, normalised answer (``exact`` and ``auto`` matching)."""
    correct: list[bool] = Field(default_factory=list)
    """Whether each candidate is right (accuracy tasks)."""
    greedy_text: str | None = None
    greedy_correct: bool | None = None
    failed: int = 0
    """Candidates that failed to generate (counted as wrong)."""


class EvalReport(NbestModel):
    """Best-of-N quality, calibration and diversity over a dataset."""

    dataset: str | None = None
    task: Literal["accuracy", "translation"]
    prompts: int
    n: int
    """Candidates generated per prompt."""
    match: str | None = None
    """Answer matching (accuracy tasks): ``auto``, ``exact`` or ``contains``."""
    extract: str | None = None
    """Answer extractor of ``auto`` and ``exact`` matching."""
    subsamples: int
    """Most subsets of N candidates per prompt and level."""
    seed: int
    """Seed of the subset draws."""
    random: Quality
    """A single random candidate (the mean over every candidate position)."""
    greedy: Quality | None = None
    """The greedy candidate, when one was generated."""
    levels: list[Level]
    """N = 1, 2, 4, ... up to ``n``."""
    items: list[ItemReport]
    completion_tokens: int = 0
    """Every generated token: all candidates, the greedy ones included."""
    generate_s: float = 0.0
    """Wall time of the generation (0 when unknown)."""
    greedy_tokens: float | None = None
    """Completion tokens of the greedy candidate, per prompt."""
    warnings: list[str] = Field(default_factory=list)
    """Why some numbers may mislead, e.g. a matching that judged nothing right while the
    gold answers appear in the candidates."""
