"""Running many requests through an orchestrator, writing each Result as it finishes.

:func:`run_batch` runs one ``Orchestrator.run`` per request, at most
``concurrency`` prompts in progress, candidates in flight bounded by the
orchestrator's ``max_in_flight``, with each Result appended to an
:class:`~nbest.batch.output.OutputLog` as it arrives, so a crash loses only the
prompts in progress.

It is :meth:`Orchestrator.as_completed
<nbest.orchestrator.core.Orchestrator.as_completed>` feeding :func:`write_results`,
given a list (every request checked before any runs) or an iterator
(``CheckedInput.requests()`` of :mod:`nbest.batch.inputs`, parsing the input one
line at a time): one pool of workers (:func:`nbest.orchestrator.many.run_many`)
takes each request only when a prompt slot is free, so memory is O(in-flight
window): ``concurrency`` requests and their Results, whatever the number of
lines. An iterator's requests are checked as each is taken; check them
beforehand with :func:`plan_check` (``nbest batch`` does, while it reads the
input) so a bad one stops the run before anything is generated.
:func:`run_requests` is the same pool over any ``run`` function (``nbest batch
--ray`` runs it over the replicas).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio

from nbest.batch.output import OutputLog
from nbest.errors import ConfigError
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.core import Rerankers
from nbest.orchestrator.many import check_count, run_many
from nbest.orchestrator.pruning import Prune, check_prune
from nbest.orchestrator.stopping import StoppingRule
from nbest.strategies.base import Strategy
from nbest.types import Request, Result

__all__ = ["BatchStats", "plan_check", "run_batch", "run_requests", "write_results"]


@dataclass
class BatchStats:
    """Counters of a batch run, updated as results arrive."""

    total: int
    """Prompts to run in this session (ids already done excluded)."""
    done: int = 0
    """Prompts finished and written."""
    candidates: int = 0
    """Candidates generated (failed and pruned ones included)."""
    pruned: int = 0
    """Candidates stopped early by the pruning policy."""
    tokens: int = 0
    """Completion tokens generated."""
    failed_prompts: list[str] = field(default_factory=list)
    """Ids of prompts whose every candidate failed (their Result is written, with the errors)."""
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        """Seconds since the first request was sent."""
        return time.perf_counter() - self.started

    def add(self, result: Result) -> None:
        self.done += 1
        self.candidates += len(result.candidates)
        self.pruned += sum(c.pruned for c in result.candidates)
        self.tokens += result.usage.completion_tokens
        if result.best is None:
            self.failed_prompts.append(result.id)


async def run_batch(
    orch: Orchestrator,
    requests: Iterable[Request],
    log: OutputLog,
    *,
    strategy: Strategy | None = None,
    rerankers: Rerankers | None = None,
    timeout: float | None = None,
    concurrency: int = 8,
    diversity: bool = False,
    until: StoppingRule | None = None,
    wave: int | None = None,
    prune: Prune | None = None,
    on_result: Callable[[Result, BatchStats], None] | None = None,
    total: int | None = None,
) -> BatchStats:
    """Run every request, appending each Result to ``log`` as soon as it is ranked.

    The keywords are those of :meth:`Orchestrator.as_completed`. Results are
    written in the order they finish; ``on_result`` is called after each
    write (progress display). ``requests`` is a list (every request checked
    before any runs) or an iterator, taken one request at a time as prompt
    slots free up (memory O(``concurrency``), see the module docs; ``total``
    then says how many it yields, for the stats).

    Raises:
        ConfigError: a bad setting, or a request the orchestrator cannot serve
            (a list's: before anything is generated; an iterator's: when it
            is taken, so check them first with :func:`plan_check`); no
            ``total`` for an iterator.
        EngineDeadError: an engine died; results written so far are kept.
    """
    if isinstance(requests, Sequence):
        total = len(requests)
    elif total is None:
        raise ConfigError("total: give the number of requests an iterator yields (for the progress)", parameter="total")
    else:
        _check_total(total)
    finished = orch.as_completed(
        requests,
        strategy=strategy,
        rerankers=rerankers,
        timeout=timeout,
        concurrency=concurrency,
        diversity=diversity,
        until=until,
        wave=wave,
        prune=prune,
    )
    return await write_results(finished, log, total=total, on_result=on_result)


async def run_requests(
    requests: Iterable[Request],
    run: Callable[[Request], Awaitable[Result]],
    log: OutputLog,
    *,
    concurrency: int,
    total: int,
    on_result: Callable[[Result, BatchStats], None] | None = None,
) -> BatchStats:
    """``run`` each request, at most ``concurrency`` at once, appending each
    Result to ``log`` as it arrives; ``total`` is the number of requests.

    The pool of :meth:`Orchestrator.as_completed` (:func:`nbest.orchestrator.many.run_many`)
    over any ``run``: the requests are taken in input order, each only when a
    worker is free, so a lazy iterator (an input file parsed line by line)
    keeps memory at ``concurrency`` requests and Results; it is advanced in a
    worker thread, so parsing a long line does not hold up the event loop.
    ``nbest batch --ray`` runs it over the replicas
    (:meth:`ReplicaPool.run <nbest.distributed.ReplicaPool.run>`); nothing
    here checks a request (the replicas do). A worker's error (an engine died,
    the iterator raised) stops the others, whose ``run`` is cancelled (aborting
    its engine requests), and is raised; results written by then are kept.

    Raises:
        ConfigError: ``concurrency`` not a whole number >= 1, ``total`` not a
            whole number >= 0.
        Exception: what ``run`` or the iterator raised first.
    """
    check_count(concurrency, "concurrency")
    _check_total(total)
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:  # the pool's workers; run_many waits for them on its way out
        try:
            stats = await write_results(run_many(tg, requests, run, concurrency), log, total=total, on_result=on_result)
        except Exception as exc:  # re-raised below, outside the task group (no ExceptionGroup)
            failure = exc
    if failure is not None:
        raise failure
    return stats


def _check_total(total: object) -> None:
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ConfigError(f"total: must be a whole number >= 0 (got {total!r})", parameter="total", value=total)


def plan_check(orch: Orchestrator, *, strategy: Strategy | None = None, prune: Prune | None = None) -> Callable[[Request], None]:
    """What :meth:`Orchestrator.run` checks of one request before generating
    it (its ``n``, its plan, pruning against the plan's engines), as a
    function: ``nbest batch`` calls it on every line while it reads the input
    (:func:`~nbest.batch.inputs.check_input`), so a request that cannot be
    served stops the run before anything is generated, without every request
    held in memory. The orchestrator need not be started.

    Raises:
        ConfigError: ``prune`` is not a Prune (here); the returned function
            raises the plan's ConfigError.
    """
    check_prune(prune)
    return functools.partial(orch.check_request, strategy=strategy, prune=prune)


async def write_results(
    finished: AsyncGenerator[tuple[int, Result], None],
    log: OutputLog,
    *,
    total: int,
    on_result: Callable[[Result, BatchStats], None] | None = None,
) -> BatchStats:
    """Append each Result ``finished`` yields (``(i, result)``, as
    :meth:`Orchestrator.as_completed` does) to ``log`` as it arrives, counting
    them; ``total`` is the number of requests. ``finished`` is closed on the
    way out. :func:`run_batch` is this over an orchestrator; replicas on a
    cluster (:class:`nbest.distributed.ReplicaPool`) feed it the same way.
    """
    stats = BatchStats(total=total)
    async with contextlib.aclosing(finished):
        async for _, result in finished:
            await log.write(result)
            stats.add(result)
            if on_result is not None:
                on_result(result, stats)
    return stats
