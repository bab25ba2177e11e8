"""Running many requests through an orchestrator, writing each Result as it finishes.

The same machinery as :meth:`Orchestrator.generate_many` (one ``run`` per
request, at most ``concurrency`` prompts in progress, candidates in flight
bounded by the orchestrator's ``max_in_flight``), except that results are
appended to an :class:`~nbest.batch.output.OutputLog` as they finish instead of
being returned at the end, so memory stays flat and a crash loses only the
prompts in progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from nbest.batch.output import OutputLog
from nbest.errors import ConfigError
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.stopping import StoppingRule
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import Request, Result

__all__ = ["BatchStats", "run_batch"]


@dataclass
class BatchStats:
    """Counters of a batch run, updated as results arrive."""

    total: int
    """Prompts to run in this session (ids already done excluded)."""
    done: int = 0
    """Prompts finished and written."""
    candidates: int = 0
    """Candidates generated (failed ones included)."""
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
        self.tokens += result.usage.completion_tokens
        if result.best is None:
            self.failed_prompts.append(result.id)


async def run_batch(
    orch: Orchestrator,
    requests: Sequence[Request],
    log: OutputLog,
    *,
    strategy: Strategy | None = None,
    rerankers: Ranker | None = None,
    timeout: float | None = None,
    concurrency: int = 8,
    diversity: bool = False,
    stop: StoppingRule | None = None,
    wave: int | None = None,
    on_result: Callable[[Result, BatchStats], None] | None = None,
) -> BatchStats:
    """Run every request, appending each Result to ``log`` as soon as it is ranked.

    Results are written in the order they finish. ``on_result`` is called
    after each write (progress display).

    Raises:
        ConfigError: ``concurrency`` below 1, or a request the orchestrator
            cannot serve (before anything is generated).
        EngineDeadError: an engine died; results written so far are kept.
    """
    if concurrency < 1:
        raise ConfigError("concurrency: must be at least 1", parameter="concurrency", value=concurrency)
    for request in requests:
        orch.check(request)
    stats = BatchStats(total=len(requests))
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(request: Request) -> None:
        async with limiter:
            result = await orch.run(
                request, strategy=strategy, rerankers=rerankers, timeout=timeout, diversity=diversity, stop=stop, wave=wave
            )
            await log.write(result)
        stats.add(result)
        if on_result is not None:
            on_result(result, stats)

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
    return stats
