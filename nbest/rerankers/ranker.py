"""Combining reranker scores into one ranking with a confidence.

With one reranker the combined score is its raw score. With several, each
reranker's scores are first normalised over the candidates (``zscore`` by
default, or ``minmax`` / ``rank``), then summed with the weights.

Confidence is ``softmax(score / temperature)`` over the candidates that
succeeded: a probability-like share that sums to 1, read as "how much of the
ranker's belief this candidate holds". ``temperature`` is the calibration knob
(lower: sharper). A candidate a reranker could not score (None) gets that
reranker's worst normalised score.

Answers (``Result.answers``) are grouped by the answer a vote reranker
extracted (confidence: the answer's vote share), else by the ``group``
callable (e.g. :class:`~nbest.rerankers.embedding.NearDuplicates`), else by
normalised text; see :mod:`nbest.rerankers.answers`. The temperature can be
fitted on labelled data with :mod:`nbest.rerankers.calibrate`.

Off the event loop: each reranker scores in a worker thread (on an event loop of
its own there), so a reranker that computes synchronously (exact MBR, answer
extraction, a plugin's plain Python) never stalls the loop that serves other
requests. A reranker that talks to an engine (it has an ``engine``, as the judge
does) or sets ``on_event_loop = True`` scores on the caller's loop. With a
``timeout``, a reranker that has not finished by then is cancelled (its thread is
told to stop at its next await and left behind) and counts as failed; the ranking
goes on with the others.

Ahead of ranking: rerankers that can work on one candidate alone
(:class:`~nbest.rerankers.base.PerCandidate`: the embedding rerankers, the vote,
cross-encoders, reward models) are handed each candidate as it finishes through
a :class:`Preparation` (:meth:`Ranker.preparation`), so their work hides behind
the generation of the others and ``rank`` computes only what is left. A prepare
that fails is recorded as a warning and the candidate is scored in ``rank`` as
without it. ``Ranker(..., prepare=False)`` turns this off.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from nbest.errors import ConfigError
from nbest.rerankers.answers import group_answers, group_extracted
from nbest.rerankers.base import AnswerGrouper, PerCandidate, Reranker, tied_ranks
from nbest.types import Answer, Candidate, Request, Score

__all__ = ["Normalize", "Preparation", "Ranked", "Ranker", "in_worker_loop", "normalize", "softmax"]

Normalize = Literal["auto", "none", "zscore", "minmax", "rank"]
T = TypeVar("T")


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Numerically stable softmax of ``values / temperature``.

    >>> [round(p, 3) for p in softmax([0.0, math.log(3)])]
    [0.25, 0.75]
    """
    if not values:
        return []
    scaled = [v / temperature for v in values]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def normalize(values: Sequence[float | None], method: Normalize) -> list[float]:
    """Normalise one reranker's scores over the candidates; None becomes the worst.

    >>> normalize([1.0, 3.0, None], "minmax")
    [0.0, 1.0, 0.0]
    >>> normalize([1.0, 3.0, 2.0], "rank")
    [0.0, 1.0, 0.5]
    """
    present = [v for v in values if v is not None]
    if not present:
        return [0.0] * len(values)
    worst = min(present)
    filled = [worst if v is None else v for v in values]
    if method in ("none", "auto"):
        return filled
    if method == "zscore":
        mean = sum(filled) / len(filled)
        std = math.sqrt(sum((v - mean) ** 2 for v in filled) / len(filled))
        return [0.0 if std == 0 else (v - mean) / std for v in filled]
    if method == "minmax":
        lo, hi = min(filled), max(filled)
        return [0.0 if hi == lo else (v - lo) / (hi - lo) for v in filled]
    if method == "rank":
        # average rank of ties, scaled to [0, 1]; higher value, higher rank
        ranks = [r - 1 for r in tied_ranks(filled)]
        top = len(filled) - 1
        return [0.0 if top == 0 else r / top for r in ranks]
    raise ConfigError(
        f"normalize: unknown method {method!r}; use zscore, minmax, rank or none", parameter="normalize", value=method
    )


class Ranked:
    """What :meth:`Ranker.rank` returns: candidates best first, answers, warnings."""

    def __init__(self, candidates: list[Candidate], answers: list[Answer], warnings: list[str]) -> None:
        self.candidates = candidates
        self.answers = answers
        self.warnings = warnings


class Ranker:
    """Runs rerankers, combines their scores, ranks and gives confidences.

    Raises:
        ConfigError: no reranker, weights of the wrong length or not summing to a
            positive number, a non-positive temperature, an unknown method.
    """

    def __init__(
        self,
        rerankers: Sequence[Reranker],
        *,
        weights: Sequence[float] | None = None,
        normalize: Normalize = "auto",
        temperature: float = 1.0,
        group: AnswerGrouper | None = None,
        configs: Sequence[Any] | None = None,
        timeout: float | None = None,
        prepare: bool = True,
    ) -> None:
        if not rerankers:
            raise ConfigError("rerankers: give at least one reranker", parameter="rerankers")
        for r in rerankers:
            if not isinstance(r, Reranker):
                raise ConfigError(f"rerankers: {r!r} is not a Reranker (needs .name and async .score)", parameter="rerankers")
        names = [r.name for r in rerankers]
        if len(set(names)) != len(names):
            raise ConfigError(f"rerankers: names must be distinct, got {names}", parameter="rerankers")
        if weights is None:
            weights = [1.0] * len(rerankers)
        if len(weights) != len(rerankers):
            raise ConfigError(
                f"weights: {len(weights)} weight(s) for {len(rerankers)} reranker(s); give one per reranker",
                parameter="weights",
                value=list(weights),
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                "weights: must be finite, non-negative and sum to a positive number", parameter="weights", value=list(weights)
            )
        if normalize not in ("auto", "none", "zscore", "minmax", "rank"):
            raise ConfigError(
                f"normalize: unknown method {normalize!r}; use auto, zscore, minmax, rank or none",
                parameter="normalize",
                value=normalize,
            )
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ConfigError("temperature: must be a positive number", parameter="temperature", value=temperature)
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError("timeout: must be a positive number of seconds", parameter="timeout", value=timeout)
        self.timeout = timeout
        """Seconds each reranker may take (None: no limit); one that takes longer counts as failed."""
        self.rerankers = list(rerankers)
        self.weights = [float(w) for w in weights]
        self.normalize: Normalize = normalize
        self.temperature = temperature
        if group is not None and not isinstance(group, AnswerGrouper):
            raise ConfigError(f"group: {group!r} is not an AnswerGrouper (needs async .group)", parameter="group")
        self.group = group
        self.configs = list(configs) if configs is not None and len(configs) == len(self.rerankers) else None
        """The registry configs the rerankers were built from (``build_ranker`` sets them), else None."""
        self.prepare = prepare
        """Start per-candidate work as each candidate finishes (:meth:`preparation`)."""

    @property
    def per_candidate(self) -> list[PerCandidate]:
        """The rerankers that can work on one candidate alone."""
        return [r for r in self.rerankers if isinstance(r, PerCandidate)]

    def preparation(self, request: Request) -> Preparation | None:
        """Per-candidate work for ``request``, to feed each candidate as it
        finishes and pass to :meth:`rank`; None when no reranker can use it
        (or ``prepare`` is off)."""
        if not self.prepare or not self.per_candidate:
            return None
        return Preparation(self, request)

    def bounded(self, timeout: float | None) -> Ranker:
        """This ranker with each reranker limited to ``timeout`` seconds (the same rerankers, shared).

        Raises:
            ConfigError: a timeout that is not a positive number.
        """
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError("timeout: must be a positive number of seconds", parameter="timeout", value=timeout)
        bounded = copy.copy(self)
        bounded.timeout = timeout
        return bounded

    async def rank(
        self, request: Request, candidates: Sequence[Candidate], prepared: Preparation | None = None, *, release: bool = True
    ) -> Ranked:
        """Score the complete candidates with every reranker (concurrently,
        each off the event loop), combine, rank; pruned candidates follow, then
        failed ones, both unranked (``rank`` and ``confidence`` None).

        A pruned candidate (``finish_reason="pruned"``: stopped early by a pruning
        policy, its text partial) is not scored and does not vote: its partial
        answer would count as a real one. It is listed so that its text, tokens and
        signals stay visible.

        With ``prepared`` (whose work must be finished), the rerankers reuse
        what it computed; what they cached for ``request`` is released when
        the ranking is done, either way (``release=False``: the caller calls
        :meth:`release` later, as adaptive sampling does after its last wave).
        """
        try:
            return await self._rank(request, candidates, prepared)
        finally:
            if release:
                self.release(request)

    def release(self, request: Request) -> None:
        """Drop what the rerankers cached for ``request`` (``rank`` does it when done)."""
        for reranker in self.per_candidate:
            with contextlib.suppress(Exception):
                reranker.release(request)

    async def _rank(self, request: Request, candidates: Sequence[Candidate], prepared: Preparation | None) -> Ranked:
        ok = [c for c in candidates if c.complete]
        pruned = sorted((c for c in candidates if c.ok and c.pruned), key=lambda c: c.index)
        failed = sorted((c for c in candidates if not c.ok), key=lambda c: c.index)
        warnings: list[str] = list(prepared.warnings) if prepared is not None else []
        results: dict[str, list[Score] | None] = {}

        async def run(reranker: Reranker) -> None:
            try:
                with anyio.fail_after(self.timeout):
                    if getattr(reranker, "on_event_loop", False) or getattr(reranker, "engine", None) is not None:
                        scores = await reranker.score(request, ok)
                    else:
                        scores = await in_worker_loop(lambda: reranker.score(request, ok))
                if len(scores) != len(ok):
                    raise ValueError(f"returned {len(scores)} scores for {len(ok)} candidates")
                results[reranker.name] = scores
            except TimeoutError:
                results[reranker.name] = None
                warnings.append(f"reranker {reranker.name} failed: did not finish within the deadline ({self.timeout:g} s)")
            except Exception as exc:  # one reranker must not sink the request
                results[reranker.name] = None
                warnings.append(f"reranker {reranker.name} failed: {type(exc).__name__}: {exc}")

        if ok:
            async with anyio.create_task_group() as tg:
                for reranker in self.rerankers:
                    tg.start_soon(run, reranker)

        method: Normalize = self.normalize
        if method == "auto":
            method = "none" if len(self.rerankers) == 1 else "zscore"
        combined = [0.0] * len(ok)
        used = 0
        for reranker, weight in zip(self.rerankers, self.weights, strict=True):
            scores = results.get(reranker.name)
            if scores is None:
                continue
            values = [s.value for s in scores]
            if all(v is None for v in values):
                continue
            used += 1
            for i, v in enumerate(normalize(values, method)):
                combined[i] += weight * v
        if ok and not used:
            warnings.append("no reranker could score these candidates; kept generation order")

        confidences = softmax(combined, self.temperature)
        scored: list[Candidate] = []
        for i, cand in enumerate(ok):
            raw = {r.name: (s[i].value if (s := results.get(r.name)) is not None else None) for r in self.rerankers}
            scored.append(cand.model_copy(update={"score": combined[i], "confidence": confidences[i], "scores": raw}))
        scored.sort(key=lambda c: (-(c.score or 0.0), c.index))
        ranked = [c.model_copy(update={"rank": r}) for r, c in enumerate(scored, start=1)]
        answers = await self._answers(request, ranked, ok, results, warnings)
        return Ranked(ranked + pruned + failed, answers, warnings)

    async def _answers(
        self,
        request: Request,
        ranked: list[Candidate],
        ok: list[Candidate],
        results: dict[str, list[Score] | None],
        warnings: list[str],
    ) -> list[Answer]:
        for reranker in self.rerankers:
            scores = results.get(reranker.name)
            if scores and all("answer" in s.details for s in scores):
                keys = {c.index: s.details["answer"] for c, s in zip(ok, scores, strict=True)}
                shares = {c.index: float(s.details["share"]) for c, s in zip(ok, scores, strict=True) if "share" in s.details}
                return group_extracted(ranked, keys, shares if len(shares) == len(ok) else None)
        if self.group is not None and ranked:
            try:
                return await self.group.group(request, ranked)
            except Exception as exc:  # grouping is a nicety: fall back to text
                warnings.append(f"answer grouping failed: {type(exc).__name__}: {exc}")
        return group_answers(ranked)


class Preparation:
    """Per-candidate work for one request, started as each candidate finishes.

    ``await add(candidate)`` runs every per-candidate reranker's ``prepare``
    (each within the ranker's ``timeout``); a failure becomes one warning per
    reranker, never an exception. Pass it to :meth:`Ranker.rank` once every
    ``add`` has returned.
    """

    def __init__(self, ranker: Ranker, request: Request) -> None:
        self.ranker = ranker
        self.request = request
        self.warnings: list[str] = []
        """One line per reranker whose prepare failed (also in the Result's warnings)."""
        self.prepared = 0
        """Candidates handed to ``add`` so far."""
        self._failed: set[str] = set()

    async def add(self, candidate: Candidate) -> None:
        """Prepare ``candidate`` with every per-candidate reranker, concurrently
        (nothing for a failed or pruned one: it is not scored)."""
        if not candidate.ok or candidate.pruned:
            return
        self.prepared += 1

        async def one(reranker: PerCandidate) -> None:
            name = getattr(reranker, "name", type(reranker).__name__)
            try:
                with anyio.fail_after(self.ranker.timeout):
                    await reranker.prepare(self.request, candidate)
            except Exception as exc:  # scored in rank instead
                if name not in self._failed:
                    self._failed.add(name)
                    late = isinstance(exc, TimeoutError)
                    why = "did not finish within the deadline" if late else f"{type(exc).__name__}: {exc}"
                    self.warnings.append(f"reranker {name}: prepare failed ({why}); scored after the last candidate")

        per_candidate = self.ranker.per_candidate
        if len(per_candidate) == 1:
            await one(per_candidate[0])
            return
        async with anyio.create_task_group() as tg:
            for reranker in per_candidate:
                tg.start_soon(one, reranker)


async def in_worker_loop(work: Callable[[], Awaitable[T]]) -> T:
    """Await ``work()`` on an event loop of its own in a worker thread, so its
    synchronous stretches do not stall the caller's loop. Cancelling the caller
    cancels ``work`` at its next await (a stretch of pure computation runs to its
    end in the thread, which is then left behind) and returns at once.

    >>> import anyio
    >>> async def answer() -> int:
    ...     return 42
    >>> anyio.run(in_worker_loop, lambda: answer())
    42
    """
    lock = threading.Lock()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    stopped = threading.Event()

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        with lock:
            if stopped.is_set():
                raise asyncio.CancelledError
            running.append((asyncio.get_running_loop(), task))
        return await work()

    try:
        return await anyio.to_thread.run_sync(lambda: asyncio.run(main()), abandon_on_cancel=True)
    except BaseException:
        with lock:
            stopped.set()
            for loop, task in running:
                with contextlib.suppress(RuntimeError):  # a loop already closed has nothing left to stop
                    loop.call_soon_threadsafe(task.cancel)
        raise
