"""One request's fan-out: every spec to its engine, concurrently, each
candidate sent on as it finishes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import anyio
from anyio.abc import ObjectSendStream

from nbest.engines.base import Engine
from nbest.errors import EngineDeadError, GenerationError
from nbest.types import Candidate, CandidateSpec, CandidateUpdate, Request

__all__ = ["fan_out"]


def _candidate(spec: CandidateSpec, update: CandidateUpdate, latency_s: float) -> Candidate:
    mean = None
    if update.cumulative_logprob is not None and update.num_tokens > 0:
        mean = update.cumulative_logprob / update.num_tokens
    return Candidate(
        index=spec.index,
        text=update.text,
        spec=spec,
        finish_reason=update.finish_reason,
        num_tokens=update.num_tokens,
        prompt_tokens=update.prompt_tokens,
        cumulative_logprob=update.cumulative_logprob,
        mean_logprob=mean,
        token_logprobs=update.token_logprobs,
        top_logprobs=update.top_logprobs,
        latency_s=latency_s,
    )


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first leaf exception of a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, Exception)
    return exc


def _failed(spec: CandidateSpec, error: str, reason: str, latency_s: float | None = None) -> Candidate:
    return Candidate(index=spec.index, spec=spec, error=error, finish_reason=reason, latency_s=latency_s)


async def fan_out(
    request: Request,
    specs: list[CandidateSpec],
    engines: Mapping[str, Engine],
    send: ObjectSendStream[Candidate],
    limiter: anyio.CapacityLimiter,
    timeout: float | None,
) -> None:
    """Generate every spec; send each candidate on ``send`` as it finishes.

    A candidate's own failure is recorded on it (``error``); candidates still
    running at the deadline are sent as timed out and their engine requests
    aborted. Cancellation aborts every engine request started and re-raises.

    Raises:
        EngineDeadError: an engine died; the other candidates are aborted.
    """
    pending = {spec.index: spec for spec in specs}
    started = time.perf_counter()

    async def one(spec: CandidateSpec) -> None:
        engine = engines[spec.engine]
        request_id = f"{request.id}-{spec.index}"
        prompt = request.rendered(spec.prompt)
        async with limiter:
            t0 = time.perf_counter()
            last: CandidateUpdate | None = None
            try:
                async for update in engine.generate(prompt, spec.params, request_id):
                    last = update
                if last is None or not last.finished:
                    raise GenerationError("the engine ended the request without a final output", engine=spec.engine)
                cand = _candidate(spec, last, time.perf_counter() - t0)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await engine.abort(request_id)
                raise
            except EngineDeadError:
                raise
            except Exception as exc:
                cand = _failed(spec, f"{type(exc).__name__}: {exc}", "error", time.perf_counter() - t0)
        pending.pop(spec.index, None)
        # the caller may have stopped listening: then the fan-out is being cancelled
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await send.send(cand)

    async with send:
        with anyio.CancelScope(deadline=started + timeout if timeout is not None else float("inf")) as scope:
            try:
                async with anyio.create_task_group() as tg:
                    for spec in specs:
                        tg.start_soon(one, spec)
            except ExceptionGroup as group:
                raise _first(group) from None
        if scope.cancelled_caught:
            elapsed = time.perf_counter() - started
            for spec in sorted(pending.values(), key=lambda s: s.index):
                await send.send(_failed(spec, f"timed out after {timeout:g} s", "timeout", elapsed))
