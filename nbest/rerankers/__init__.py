"""Rerankers: score candidates, combine scores, give calibrated confidence.

Every reranker kind is registered on :data:`RERANKERS` with its config and
short form (see :mod:`nbest.rerankers.registry`); :func:`build_ranker` is the
one way every surface builds a Ranker from short forms or configs.

>>> from nbest import rerankers
>>> [r.name for r in rerankers.build_ranker(["vote:number=2", "logprob"]).rerankers]
['vote', 'mean_logprob']
"""

from __future__ import annotations

from nbest.rerankers import extract
from nbest.rerankers.answers import group_answers, group_extracted, normalize_text
from nbest.rerankers.arithmetic import ArithmeticCheck, ArithmeticConfig
from nbest.rerankers.base import AnswerGrouper, PerCandidate, Reranker
from nbest.rerankers.calibrate import Calibration, fit_temperature
from nbest.rerankers.crossencoder import CrossEncoder, CrossEncoderConfig
from nbest.rerankers.embedding import (
    Embedder,
    EmbeddingConsensus,
    EmbeddingConsensusConfig,
    NearDuplicates,
    SourceSimilarity,
    SourceSimilarityConfig,
    default_embedding_model,
)
from nbest.rerankers.extract import get_extractor, normalize_answer
from nbest.rerankers.features import FeatureConfig, FeatureReranker
from nbest.rerankers.judge import LLMJudge, LLMJudgeConfig
from nbest.rerankers.logprob import MeanLogProb, MeanLogProbConfig, Perplexity, PerplexityConfig, SumLogProb, SumLogProbConfig
from nbest.rerankers.mbr import MBR, MBRConfig
from nbest.rerankers.ranker import Ranked, Ranker, normalize, softmax
from nbest.rerankers.registry import (
    RERANKERS,
    RankerConfig,
    RerankerConfig,
    RerankerSpec,
    build_ranker,
    config_for_name,
    config_of,
    parse_spec,
    reranker_config,
)
from nbest.rerankers.reward import RewardModel, RewardModelConfig
from nbest.rerankers.vote import MajorityVote, VoteConfig

__all__ = [
    "MBR",
    "RERANKERS",
    "AnswerGrouper",
    "ArithmeticCheck",
    "ArithmeticConfig",
    "Calibration",
    "CrossEncoder",
    "CrossEncoderConfig",
    "Embedder",
    "EmbeddingConsensus",
    "EmbeddingConsensusConfig",
    "FeatureConfig",
    "FeatureReranker",
    "LLMJudge",
    "LLMJudgeConfig",
    "MBRConfig",
    "MajorityVote",
    "MeanLogProb",
    "MeanLogProbConfig",
    "NearDuplicates",
    "PerCandidate",
    "Perplexity",
    "PerplexityConfig",
    "Ranked",
    "Ranker",
    "RankerConfig",
    "Reranker",
    "RerankerConfig",
    "RerankerSpec",
    "RewardModel",
    "RewardModelConfig",
    "SourceSimilarity",
    "SourceSimilarityConfig",
    "SumLogProb",
    "SumLogProbConfig",
    "VoteConfig",
    "build_ranker",
    "config_for_name",
    "config_of",
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
    "reranker_config",
    "softmax",
]
