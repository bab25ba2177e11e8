"""Measures that several layers use: diversity of a candidate set, calibration of confidences.

>>> from nbest import metrics
>>> round(metrics.diversity(["the cat sat", "the cat ran"]).distinct_2, 2)
0.75
"""

from __future__ import annotations

from nbest.metrics.calibration import ReliabilityBin, expected_calibration_error, reliability
from nbest.metrics.diversity import add_diversity, distinct_n, diversity, embedding_distance, load_embedder, self_bleu

__all__ = [
    "ReliabilityBin",
    "add_diversity",
    "distinct_n",
    "diversity",
    "embedding_distance",
    "expected_calibration_error",
    "load_embedder",
    "reliability",
    "self_bleu",
]
