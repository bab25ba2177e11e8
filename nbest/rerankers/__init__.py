"""Rerankers: score candidates, combine scores, give calibrated confidence."""

from __future__ import annotations

from nbest.rerankers.answers import group_answers, normalize_text
from nbest.rerankers.base import Reranker
from nbest.rerankers.logprob import MeanLogProb, Perplexity, SumLogProb
from nbest.rerankers.ranker import Ranked, Ranker, softmax
from nbest.rerankers.spec import parse_spec

__all__ = ["MeanLogProb", "Perplexity", "SumLogProb", "Ranked", "Ranker", "Reranker", "group_answers", "normalize_text", "parse_spec", "softmax"]
