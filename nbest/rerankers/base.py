"""The Reranker protocol, and the optional per-candidate one (:class:`PerCandidate`)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

from nbest.types import Answer, Candidate, Request, Score

__all__ = ["AnswerGrouper", "CacheKey", "CandidateCache", "PerCandidate", "Reranker", "cache_key", "text_hash", "tied_ranks"]

V = TypeVar("V")


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


@runtime_checkable
class PerCandidate(Protocol):
    """A reranker that can do part of its work on one candidate alone (optional).

    The orchestrator calls ``prepare`` for each candidate as it finishes, while
    the others are still generating; ``prepare`` computes and caches what
    ``score`` needs for that candidate (an embedding, an extracted answer, a
    model's logit), and ``score`` reuses it, computing only what is missing.
    ``release`` drops what was cached for the request once it is ranked. A
    ``prepare`` that raises costs nothing but time: ``score`` computes the
    candidate as it would have without it. Heavy work belongs off the event
    loop, as in ``score``.
    """

    async def prepare(self, request: Request, candidate: Candidate) -> None: ...

    def release(self, request: Request) -> None: ...


CacheKey = tuple[str, int, str]


def cache_key(request: Request, candidate: Candidate) -> CacheKey:
    """What per-candidate work is cached under: the request's id, the
    candidate's index and a hash of its text (a candidate whose text changed is
    computed anew).

    >>> from nbest.types import CandidateSpec, SamplingParams
    >>> c = Candidate(index=2, spec=CandidateSpec(index=2, params=SamplingParams()), text="51")
    >>> cache_key(Request(id="r1", prompt="17*3?"), c)[:2]
    ('r1', 2)
    """
    return (request.id, candidate.index, text_hash(candidate.text))


def text_hash(text: str) -> str:
    """A short digest of ``text`` for cache keys."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class CandidateCache(Generic[V]):
    """A bounded, thread-safe store of per-candidate work, keyed by :func:`cache_key`.

    Entries of one request go with :meth:`forget`; past ``size`` entries the
    oldest go first, so a request that is never ranked cannot grow it for ever.

    >>> cache: CandidateCache[int] = CandidateCache(size=2)
    >>> cache.put(("a", 0, "h"), 1); cache.put(("b", 0, "h"), 2); cache.put(("b", 1, "h"), 3)
    >>> cache.get(("a", 0, "h")), cache.get(("b", 1, "h")), len(cache)
    (None, 3, 2)
    >>> cache.forget("b"); len(cache)
    0
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: CacheKey, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def forget(self, request_id: str) -> None:
        """Drop every entry of the request ``request_id``."""
        with self._lock:
            for key in [k for k in self._items if k[0] == request_id]:
                del self._items[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def tied_ranks(values: Sequence[float]) -> list[float]:
    """Each value's rank from 1 (the smallest) up; tied values share their mean rank.

    >>> tied_ranks([3.0, 1.0, 3.0, 2.0])
    [3.5, 1.0, 3.5, 2.0]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for j in range(start, end + 1):
            ranks[order[j]] = (start + end) / 2 + 1
        start = end + 1
    return ranks
