"""nbest: asynchronous multi-candidate generation with reranking and calibrated confidence.

>>> import nbest
>>> sorted(nbest.__all__)[:3]
['Answer', 'Candidate', 'CandidateSpec']
"""

from __future__ import annotations

from nbest import metrics, rerankers, strategies, tasks
from nbest._sync import generate
from nbest.engines import Engine, OpenAIEngine, VLLMEngine
from nbest.errors import ConfigError, EngineDeadError, EngineError, GenerationError, NbestError, RerankerError
from nbest.orchestrator import Orchestrator, Prune, stopping
from nbest.types import (
    Answer,
    Candidate,
    CandidateSpec,
    CandidateUpdate,
    ChatMessage,
    Request,
    Result,
    SamplingParams,
    Score,
)

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Candidate",
    "CandidateSpec",
    "CandidateUpdate",
    "ChatMessage",
    "ConfigError",
    "Engine",
    "EngineDeadError",
    "EngineError",
    "GenerationError",
    "NbestError",
    "OpenAIEngine",
    "Orchestrator",
    "Prune",
    "Request",
    "RerankerError",
    "Result",
    "SamplingParams",
    "Score",
    "VLLMEngine",
    "__version__",
    "generate",
    "metrics",
    "rerankers",
    "stopping",
    "strategies",
    "tasks",
]
