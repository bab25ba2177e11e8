"""One request's fan-out: every spec to its engine, concurrently, each
candidate sent on as it finishes.

With a pruning state (:class:`~nbest.orchestrator.pruning.PruneRun`) the
warm-up candidates run first; the others wait for them without holding an
in-flight slot, then generate with token updates and are stopped (their engine
request aborted) as soon as their group confidence falls below the threshold:
they are sent on with ``finish_reason="pruned"`` and their partial text.

Every finished candidate with per-token log-probabilities carries its
confidence signals (:func:`nbest.rerankers.confidence.signals`, default window):
about 3 us per token, computed once, so rerankers and callers need not redo it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
from anyio.abc import ObjectSendStream

from nbest.engines.base import Engine
from nbest.errors import EngineDeadError, GenerationError
from nbest.orchestrator.pruning import PruneRun
from nbest.rerankers.confidence import signals
from nbest.types import Candidate, CandidateSpec, CandidateUpdate, Request

__all__ = ["Spent", "fan_out"]


@dataclass
class Spent:
    """Tokens of engine requests that were cancelled before they produced a
    candidate, as far as their last update said (an engine that reports only the
    final output reports nothing before it: those tokens cannot be known)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, update: CandidateUpdate | None) -> None:
        if update is not None:
            self.prompt_tokens += update.prompt_tokens
            self.completion_tokens += update.num_tokens


def _with_signals(candidate: Candidate) -> Candidate:
    if candidate.token_logprobs or candidate.top_logprobs:
        candidate.signals = signals(candidate) or None
    return candidate


def _candidate(
    spec: CandidateSpec,
    update: CandidateUpdate,
    latency_s: float,
    *,
    logprobs: list[float] | None = None,
    alternatives: list[dict[str, float]] | None = None,
    finish_reason: str | None = None,
) -> Candidate:
    """The candidate of ``spec`` from its last ``update``; ``logprobs`` and
    ``alternatives``: the tokens gathered from token updates, used when the update
    does not hold them all (a pruned candidate's, or an engine whose final update
    carries only the new tokens)."""
    token_logprobs = update.token_logprobs
    if logprobs is not None and len(logprobs) > len(token_logprobs or ()):
        token_logprobs = logprobs
    top = update.top_logprobs
    if alternatives is not None and len(alternatives) > len(top or ()):
        top = alternatives
    cumulative = update.cumulative_logprob
    if (
        token_logprobs
        and (cumulative is None or logprobs is not None)
        and len(token_logprobs) == update.num_tokens
        and all(math.isfinite(v) for v in token_logprobs)
    ):  # every token's value is at hand: their sum is exact, whatever a partial update said
        cumulative = math.fsum(token_logprobs)
    mean = None
    if cumulative is not None and update.num_tokens > 0:
        mean = cumulative / update.num_tokens
    return _with_signals(
        Candidate(
            index=spec.index,
            text=update.text,
            spec=spec,
            finish_reason=finish_reason or update.finish_reason,
            num_tokens=update.num_tokens,
            prompt_tokens=update.prompt_tokens,
            cumulative_logprob=cumulative,
            mean_logprob=mean,
            token_logprobs=token_logprobs,
            top_logprobs=top,
            latency_s=latency_s,
        )
    )


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first leaf exception of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, Exception)
    return exc


def _failed(
    spec: CandidateSpec, error: str, reason: str, latency_s: float | None = None, last: CandidateUpdate | None = None
) -> Candidate:
    """A failed candidate; ``last``: its last partial update (the tokens it did generate count in the usage)."""
    tokens = {} if last is None else {"num_tokens": last.num_tokens, "prompt_tokens": last.prompt_tokens}
    return Candidate(index=spec.index, spec=spec, error=error, finish_reason=reason, latency_s=latency_s, **tokens)


async def fan_out(
    request: Request,
    specs: list[CandidateSpec],
    engines: Mapping[str, Engine],
    send: ObjectSendStream[Candidate],
    limiter: anyio.CapacityLimiter,
    timeout: float | None,
    *,
    pruning: PruneRun | None = None,
    spent: Spent | None = None,
) -> None:
    """Generate every spec; send each candidate on ``send`` as it finishes.

    A candidate's own failure is recorded on it (``error``); candidates still
    running at the deadline are sent as timed out (with the tokens their last
    update reported) and their engine requests aborted. Cancellation aborts
    every engine request started and re-raises; ``spent`` adds up what the
    cancelled requests had generated.

    ``pruning``: the request's pruning state (shared by every wave of the
    request); the specs it counts as warm-up report to it when they end, the
    others wait for the threshold and are pruned below it (module docstring).
    The caller checked that their engines stream tokens.

    Raises:
        EngineDeadError: an engine died; the other candidates are aborted.
    """
    pending = {spec.index: spec for spec in specs}
    partial: dict[int, CandidateUpdate] = {}
    started = time.perf_counter()

    async def one(spec: CandidateSpec) -> None:
        engine = engines[spec.engine]
        request_id = f"{request.id}-{spec.index}"
        prompt = request.rendered(spec.prompt)
        warmup = pruning is not None and spec.index in pruning.warmup
        cand: Candidate | None = None
        try:
            if pruning is not None and not warmup:
                await pruning.wait()  # before taking a slot: a waiting candidate holds none
            watch = pruning if pruning is not None and not warmup and pruning.threshold is not None else None
            async with limiter:
                t0 = time.perf_counter()
                last: CandidateUpdate | None = None
                try:
                    if watch is None:
                        async for update in engine.generate(prompt, spec.params, request_id):
                            last = update
                            if not update.finished:
                                partial[spec.index] = update
                        if last is None or not last.finished:
                            raise GenerationError("the engine ended the request without a final output", engine=spec.engine)
                        cand = _candidate(spec, last, time.perf_counter() - t0)
                    else:
                        cand = await _watched(engine, prompt, spec, request_id, watch, partial, t0)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        await engine.abort(request_id)
                    raise
                except EngineDeadError:
                    raise
                except Exception as exc:
                    cand = _failed(spec, f"{type(exc).__name__}: {exc}", "error", time.perf_counter() - t0)
        finally:
            if warmup:
                assert pruning is not None
                pruning.warmup_done(spec.index, cand)
        assert cand is not None
        pending.pop(spec.index, None)
        partial.pop(spec.index, None)
        # the caller may have stopped listening: then the fan-out is being cancelled
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await send.send(cand)

    async with send:
        scope = anyio.CancelScope(deadline=started + timeout if timeout is not None else float("inf"))
        try:
            with scope:
                try:
                    async with anyio.create_task_group() as tg:
                        for spec in specs:
                            tg.start_soon(one, spec)
                except ExceptionGroup as group:
                    raise _first(group) from None
        finally:
            if spent is not None and not scope.cancelled_caught:  # cancelled from outside (or an engine died)
                for index in pending:
                    spent.add(partial.get(index))
        if scope.cancelled_caught:
            elapsed = time.perf_counter() - started
            for spec in sorted(pending.values(), key=lambda s: s.index):
                await send.send(_failed(spec, f"timed out after {timeout:g} s", "timeout", elapsed, partial.get(spec.index)))


async def _watched(
    engine: Engine,
    prompt: object,
    spec: CandidateSpec,
    request_id: str,
    pruning: PruneRun,
    partial: dict[int, CandidateUpdate],
    t0: float,
) -> Candidate:
    """Generate ``spec`` with token updates, feeding each new token to a tracker;
    stop and abort the engine request once the group confidence falls below the
    threshold (checked after each update: the candidate keeps every token the
    engine reported up to then)."""
    tracker = pruning.tracker()
    logprobs: list[float] = []
    alternatives: list[dict[str, float]] = []
    last: CandidateUpdate | None = None
    pruned = False
    generate = engine.generate(prompt, spec.params, request_id, tokens=True)  # type: ignore[call-arg, arg-type]
    async with contextlib.aclosing(generate) as updates:  # type: ignore[type-var]
        async for update in updates:
            last = update
            new = update.new_token_logprobs or []
            tops = update.new_top_logprobs or []
            for i, logprob in enumerate(new):
                top = tops[i] if i < len(tops) else None
                tracker.update(logprob, top)
                logprobs.append(logprob)
                alternatives.append(top or {})
            if update.finished:
                break
            partial[spec.index] = update
            if pruning.prunes(tracker):
                pruned = True
                break
    if pruned:
        with anyio.CancelScope(shield=True):
            await engine.abort(request_id)
        pruning.pruned.append(spec.index)
    elif last is None or not last.finished:
        raise GenerationError("the engine ended the request without a final output", engine=spec.engine)
    assert last is not None
    return _candidate(
        spec,
        last,
        time.perf_counter() - t0,
        logprobs=logprobs,
        alternatives=alternatives if any(alternatives) else None,
        finish_reason="pruned" if pruned else None,
    )
