"""Rerankers: score candidates, combine scores, give calibrated confidence."""

from __future__ import annotations

from nbest.rerankers.answers import group_answers, normalize_text
from nbest.rerankers.base import Reranker
from nbest.rerankers.logprob import MeanLogProb
from nbest.rerankers.ranker import Ranked, Ranker, softmax
from nbest.rerankers.spec import parse_spec

__all__ = ["MeanLogProb", "Ranked", "Ranker", "Reranker", "group_answers", "normalize_text", "parse_spec", "softmax"]
