"""The Reranker protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from nbest.types import Answer, Candidate, Request, Score

__all__ = ["AnswerGrouper", "Reranker"]


@runtime_checkable
class Reranker(Protocol):
    """Scores a set of candidates for one request; higher is better.

    ``score`` returns one :class:`~nbest.types.Score` per candidate, in order
    (``value=None`` for a candidate it cannot score). It may raise
    :class:`~nbest.errors.RerankerError`; the ranker then records the failure
    and ranks by the other rerankers. Heavy work belongs off the event loop
    (``anyio.to_thread.run_sync``), batched over the candidates.
    """

    name: str

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]: ...


@runtime_checkable
class AnswerGrouper(Protocol):
    """Groups ranked candidates into distinct answers (``Result.answers``).

    Used by the Ranker when no reranker extracted answers. ``group`` receives
    the successful candidates best first, with their confidences, and returns
    the answers most confident first.
    """

    async def group(self, request: Request, candidates: Sequence[Candidate]) -> list[Answer]: ...
