"""Evaluating best-of-N: accuracy (or chrF/BLEU), oracle@N, calibration and
diversity of every reranker at N = 1, 2, 4, ... from candidates generated once.

>>> from nbest.evaluation import levels_for
>>> levels_for(8)
[1, 2, 4, 8]

From Python: :func:`generate_samples` on an orchestrator, then
:func:`score_samples` with the rankers to compare; ``nbest eval`` does both and
prints :func:`report_table`, writes the JSON report and :func:`write_plots`.
:func:`compare_methods` measures methods on accuracy per token (``nbest eval
--compare``); :func:`fit_confidence_map` (Platt) and
:func:`fit_confidence_temperature` calibrate a confidence on one split for
another, and :func:`ece_interval` says how noisy an ECE is.
"""

from __future__ import annotations

from nbest.evaluation.calibration import ConfidenceMap, fit_confidence_map, fit_confidence_temperature, scale_confidence
from nbest.evaluation.compare import CompareReport, Method, MethodRow, compare_methods, parse_method
from nbest.evaluation.dataset import EvalItem, Fields, read_dataset
from nbest.evaluation.evaluate import EvalSample, generate_samples, levels_for, score_samples
from nbest.evaluation.matching import Matcher
from nbest.evaluation.metrics import subsets
from nbest.evaluation.plots import write_compare_plot, write_plots
from nbest.evaluation.report import EvalReport, Level, Quality, RerankerLevel
from nbest.evaluation.table import print_report, report_table
from nbest.metrics.calibration import ece_interval, expected_calibration_error, reliability

__all__ = [
    "CompareReport",
    "ConfidenceMap",
    "EvalItem",
    "EvalReport",
    "EvalSample",
    "Fields",
    "Level",
    "Matcher",
    "Method",
    "MethodRow",
    "Quality",
    "RerankerLevel",
    "compare_methods",
    "ece_interval",
    "expected_calibration_error",
    "fit_confidence_map",
    "fit_confidence_temperature",
    "generate_samples",
    "levels_for",
    "parse_method",
    "print_report",
    "read_dataset",
    "reliability",
    "report_table",
    "scale_confidence",
    "score_samples",
    "subsets",
    "write_compare_plot",
    "write_plots",
]
