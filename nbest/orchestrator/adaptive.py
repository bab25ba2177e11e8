"""Adaptive sampling: generate the plan in waves, stop once the answer is clear.

The strategy plans all ``n`` candidates as usual; they are generated in
waves of ``wave`` candidates, in plan order. After each wave every candidate
so far is ranked and the stopping rule (:mod:`nbest.orchestrator.stopping`)
reads that Result. The next wave generates while the current one is ranked,
so the engine stays busy; when the rule says stop, that wave is cancelled
(its engine requests aborted, its candidates dropped) and the Result of the
waves that were ranked is returned, with ``samples_used`` = how many
candidates it holds. Each candidate can be handed on as it finishes
(``on_candidate``: the orchestrator prepares it for the rerankers), so a
wave's ranking reuses that work and earlier waves' work. The deadline (``timeout``) covers all waves; when it
passes, the waves ranked so far are returned.

Because waves follow plan order, a seeded request stops after the same wave
every time the engine reproduces its texts.

With pruning (``prune=``, :mod:`nbest.orchestrator.pruning`) one pruning state
spans all waves: the warm-up candidates are the first ``warmup`` of the plan,
whichever waves hold them, and the later waves' candidates wait for them. A
pruned candidate stays in the Result but does not vote, and the stopping rule
reads a Result without the pruned candidates (the complete ones renumbered
0, 1, ... in plan order, so the windows of :class:`~nbest.orchestrator.stopping.ESC`
run over complete candidates).

Cost: ``Result.usage`` counts every candidate of the ranked waves (pruned ones
with the tokens they had when stopped) and, when the rule stops early, what the
cancelled wave had generated: its candidates that had already finished or been
pruned, and its requests cancelled mid-generation as far as their last token
update said. An engine that reports only final outputs (no token updates asked
for) reports nothing before the end, so the tokens of a request cancelled
mid-generation then cannot be known and are not counted.

This module knows nothing of the orchestrator: it is handed the planned
request, the engines, a rank function and the limiter
(:meth:`Orchestrator.run <nbest.orchestrator.core.Orchestrator.run>` calls it
with ``until=`` and ``wave=``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from nbest.engines.base import Engine
from nbest.errors import ConfigError
from nbest.orchestrator.fanout import Spent, fan_out
from nbest.orchestrator.pruning import PruneRun
from nbest.orchestrator.stopping import StoppingRule
from nbest.types import Candidate, CandidateSpec, Request, Result, Usage

__all__ = ["DEFAULT_WAVE", "OnCandidate", "Rank", "check_adaptive", "complete_view", "run_adaptive"]

DEFAULT_WAVE = 4
"""Candidates per wave when a stopping rule is given without ``wave``."""

OnCandidate = Callable[[Candidate], Coroutine[Any, Any, None]]
"""Called for each candidate as it finishes (e.g. to prepare it for ranking); must not raise."""

Rank = Callable[[list[Candidate], float], Awaitable[Result]]
"""Ranks the candidates generated so far (in plan order), given the seconds
spent generating them, into a Result."""


def check_adaptive(until: StoppingRule | None, wave: int | None) -> int | None:
    """Validate ``until``/``wave``; the wave size to use (None: not adaptive).

    Raises:
        ConfigError: ``wave`` below 1, ``wave`` without ``until``, or an
            ``until`` that is not a stopping rule.
    """
    if wave is not None and (isinstance(wave, bool) or not isinstance(wave, int) or wave < 1):
        raise ConfigError(f"wave: must be a whole number >= 1 (got {wave!r})", parameter="wave", value=wave)
    if until is None:
        if wave is not None:
            raise ConfigError("wave: only used with a stopping rule (until=stopping.Beta(0.95))", parameter="wave", value=wave)
        return None
    if not isinstance(until, StoppingRule):
        raise ConfigError(
            f"until: {until!r} is not a stopping rule (use stopping.Beta, Dirichlet, Confidence or ESC)",
            parameter="until",
        )
    if wave is None:  # a rule may say which wave size it is meant for (stopping.ESC: its window)
        preferred = getattr(until, "wave", None)
        return preferred if isinstance(preferred, int) and not isinstance(preferred, bool) and preferred >= 1 else DEFAULT_WAVE
    return wave


@dataclass
class _Wave:
    """One wave's fan-out, run in the background; its candidates when done."""

    specs: list[CandidateSpec]
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    candidates: list[Candidate] = field(default_factory=list)
    error: Exception | None = None
    spent: Spent = field(default_factory=Spent)

    async def run(
        self,
        request: Request,
        engines: Mapping[str, Engine],
        limiter: anyio.CapacityLimiter,
        timeout: float | None,
        on_candidate: OnCandidate | None = None,
        pruning: PruneRun | None = None,
    ) -> None:
        send, receive = anyio.create_memory_object_stream[Candidate](len(self.specs))

        async def collect() -> None:
            with receive:
                async with anyio.create_task_group() as tg:
                    async for candidate in receive:
                        self.candidates.append(candidate)
                        if on_candidate is not None:
                            tg.start_soon(on_candidate, candidate)

        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect)
                    try:
                        await fan_out(request, self.specs, engines, send, limiter, timeout, pruning=pruning, spent=self.spent)
                    finally:
                        send.close()
        except Exception as exc:  # an engine died: the caller re-raises it
            self.error = exc.exceptions[0] if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1 else exc
        finally:
            self.done.set()


async def run_adaptive(
    request: Request,
    specs: list[CandidateSpec],
    *,
    engines: Mapping[str, Engine],
    rank: Rank,
    until: StoppingRule,
    wave: int,
    limiter: anyio.CapacityLimiter,
    timeout: float | None = None,
    on_candidate: OnCandidate | None = None,
    pruning: PruneRun | None = None,
) -> Result:
    """Generate the plan ``specs`` of ``request`` (seeded, checked) in waves of
    ``wave``, each on the engine its spec names, under ``limiter``; stop when
    ``until`` says so. ``on_candidate`` sees each candidate as it finishes;
    a wave is ranked once it has returned for all of the wave's candidates.
    ``pruning``: the request's pruning state, shared by every wave.

    Raises:
        EngineDeadError: an engine died; the running waves are cancelled.
    """
    waves = [specs[i : i + wave] for i in range(0, len(specs), wave)]
    started = time.perf_counter()
    deadline = None if timeout is None else started + timeout
    collected: list[Candidate] = []
    rerank_s = 0.0
    result: Result | None = None

    def launch(tg: TaskGroup, k: int) -> _Wave | None:
        if k >= len(waves):
            return None
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0 and k > 0:
            return None  # past the deadline: return the waves ranked so far
        if remaining is not None:
            remaining = max(remaining, 1e-3)
        job = _Wave(waves[k])
        tg.start_soon(job.run, request, engines, limiter, remaining, on_candidate, pruning)
        return job

    error: Exception | None = None
    stopped: _Wave | None = None
    async with anyio.create_task_group() as tg:
        current, ahead = launch(tg, 0), launch(tg, 1)
        k = 0
        try:
            while current is not None:
                await current.done.wait()
                error = current.error or (ahead.error if ahead is not None else None)
                if error is not None:
                    break
                collected.extend(sorted(current.candidates, key=lambda c: c.index))
                generate_s = time.perf_counter() - started
                result = await rank(list(collected), generate_s)
                rerank_s += result.timings.rerank_s
                if until.check(complete_view(result)).stop:
                    stopped = ahead
                    break
                k += 1
                current, ahead = ahead, launch(tg, k + 1)
        finally:
            if ahead is not None:
                ahead.scope.cancel()  # fan_out aborts its engine requests
    if error is not None:
        raise error
    assert result is not None  # the first wave always runs
    timings = result.timings.model_copy(update={"rerank_s": rerank_s})
    usage = result.usage
    if stopped is not None:  # the wave cancelled when the rule stopped: what it had generated
        usage = Usage(
            prompt_tokens=usage.prompt_tokens + stopped.spent.prompt_tokens + sum(c.prompt_tokens for c in stopped.candidates),
            completion_tokens=usage.completion_tokens
            + stopped.spent.completion_tokens
            + sum(c.num_tokens for c in stopped.candidates),
        )
    return result.model_copy(update={"samples_used": len(collected), "timings": timings, "usage": usage})


def complete_view(result: Result) -> Result:
    """``result`` as a stopping rule reads it: without its pruned candidates, the
    others renumbered 0, 1, ... in plan order (answers' support and ``best`` alike).

    >>> from nbest.types import Answer, CandidateSpec, SamplingParams
    >>> spec = lambda i: CandidateSpec(index=i, params=SamplingParams())
    >>> cands = [Candidate(index=i, spec=spec(i), text="4", rank=None if i == 1 else 1,
    ...                    finish_reason="pruned" if i == 1 else "stop") for i in (0, 1, 2)]
    >>> four = Answer(answer="4", confidence=1, support=[0, 2])
    >>> r = Result(id="r", prompt="q", n=3, candidates=cands, best=cands[0], answers=[four])
    >>> [c.index for c in complete_view(r).candidates], complete_view(r).answers[0].support
    ([0, 1], [0, 1])
    """
    if not any(c.pruned for c in result.candidates):
        return result
    kept = sorted(c.index for c in result.candidates if not c.pruned)
    renumber = {old: new for new, old in enumerate(kept)}
    candidates = [c.model_copy(update={"index": renumber[c.index]}) for c in result.candidates if not c.pruned]
    answers = [
        a.model_copy(update={"support": [renumber[i] for i in a.support if i in renumber]})
        for a in result.answers
        if any(i in renumber for i in a.support)
    ]
    best = result.best
    if best is not None:
        best = best.model_copy(update={"index": renumber[best.index]}) if best.index in renumber else None
    return result.model_copy(update={"candidates": candidates, "answers": answers, "best": best})
