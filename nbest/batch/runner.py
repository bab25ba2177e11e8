"""Running many requests through an orchestrator, writing each Result as it finishes.

:func:`run_batch` is :meth:`Orchestrator.as_completed
<nbest.orchestrator.core.Orchestrator.as_completed>` (one ``run`` per request,
at most ``concurrency`` prompts in progress, candidates in flight bounded by
the orchestrator's ``max_in_flight``) with each Result appended to an
:class:`~nbest.batch.output.OutputLog` as it arrives, so memory stays flat and
a crash loses only the prompts in progress.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from nbest.batch.output import OutputLog
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.core import Rerankers
from nbest.orchestrator.pruning import Prune
from nbest.orchestrator.stopping import StoppingRule
from nbest.strategies.base import Strategy
from nbest.types import Request, Result

__all__ = ["BatchStats", "run_batch", "write_results"]


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
    requests: Sequence[Request],
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
) -> BatchStats:
    """Run every request, appending each Result to ``log`` as soon as it is ranked.

    The keywords are those of :meth:`Orchestrator.as_completed`. Results are
    written in the order they finish; ``on_result`` is called after each
    write (progress display).

    Raises:
        ConfigError: a bad setting, or a request the orchestrator cannot serve
            (before anything is generated).
        EngineDeadError: an engine died; results written so far are kept.
    """
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
    return await write_results(finished, log, total=len(requests), on_result=on_result)


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
