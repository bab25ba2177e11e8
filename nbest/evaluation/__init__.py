"""Evaluating best-of-N: accuracy (or chrF/BLEU), oracle@N, calibration and
diversity of every reranker at N = 1, 2, 4, ... from candidates generated once.

>>> from nbest.evaluation import levels_for
>>> levels_for(8)
[1, 2, 4, 8]

From Python: :func:`generate_samples` on an orchestrator, then
:func:`score_samples` with the rankers to compare; ``nbest eval`` does both and
prints :func:`report_table`, writes the JSON report and :func:`write_plots`.
"""

from __future__ import annotations

from nbest.evaluation.dataset import EvalItem, Fields, read_dataset
from nbest.evaluation.evaluate import EvalSample, generate_samples, levels_for, score_samples
from nbest.evaluation.matching import Matcher
from nbest.evaluation.metrics import subsets
from nbest.evaluation.plots import write_plots
from nbest.evaluation.report import EvalReport, Level, Quality, RerankerLevel
from nbest.evaluation.table import print_report, report_table
from nbest.metrics.calibration import expected_calibration_error, reliability

__all__ = [
    "EvalItem",
    "EvalReport",
    "EvalSample",
    "Fields",
    "Level",
    "Matcher",
    "Quality",
    "RerankerLevel",
    "expected_calibration_error",
    "generate_samples",
    "levels_for",
    "print_report",
    "read_dataset",
    "reliability",
    "report_table",
    "score_samples",
    "subsets",
    "write_plots",
]
