"""Rerankers: score candidates, combine scores, give calibrated confidence."""

from __future__ import annotations

from nbest.rerankers import extract
from nbest.rerankers.answers import group_answers, group_extracted, normalize_text
from nbest.rerankers.base import AnswerGrouper, Reranker
from nbest.rerankers.calibrate import Calibration, fit_temperature
from nbest.rerankers.crossencoder import CrossEncoder
from nbest.rerankers.embedding import Embedder, EmbeddingConsensus, NearDuplicates, SourceSimilarity, default_embedding_model
from nbest.rerankers.extract import get_extractor, normalize_answer
from nbest.rerankers.judge import LLMJudge
from nbest.rerankers.logprob import MeanLogProb, Perplexity, SumLogProb
from nbest.rerankers.mbr import MBR
from nbest.rerankers.ranker import Ranked, Ranker, normalize, softmax
from nbest.rerankers.reward import RewardModel
from nbest.rerankers.spec import parse_spec
from nbest.rerankers.vote import MajorityVote

__all__ = [
    "MBR",
    "AnswerGrouper",
    "Calibration",
    "CrossEncoder",
    "Embedder",
    "EmbeddingConsensus",
    "LLMJudge",
    "MajorityVote",
    "MeanLogProb",
    "NearDuplicates",
    "Perplexity",
    "Ranked",
    "Ranker",
    "Reranker",
    "RewardModel",
    "SourceSimilarity",
    "SumLogProb",
    "default_embedding_model",
    "extract",
    "fit_temperature",
    "get_extractor",
    "group_answers",
    "group_extracted",
    "normalize",
    "normalize_answer",
    "normalize_text",
    "parse_spec",
    "softmax",
]
