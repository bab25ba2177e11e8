"""The Orchestrator: plan, fan out, stream, rank."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypedDict, Unpack

import anyio
from anyio.abc import TaskGroup

from nbest.engines.base import Engine, Startable
from nbest.errors import ConfigError, NbestError
from nbest.metrics.diversity import add_diversity
from nbest.orchestrator.adaptive import check_adaptive, run_adaptive
from nbest.orchestrator.fanout import fan_out
from nbest.orchestrator.stopping import StoppingRule
from nbest.rerankers.base import Reranker
from nbest.rerankers.logprob import MeanLogProb
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy, checked_plan
from nbest.strategies.fixed import Fixed
from nbest.types import DEFAULT_MAX_N, Candidate, CandidateSpec, Prompt, Request, Result, SamplingParams, Timings, Usage

__all__ = ["Orchestrator", "SamplingKwargs"]

Rerankers = Sequence[Reranker] | Ranker


class _Sampling(TypedDict, total=False):
    """Base sampling settings but ``stop`` (``generate`` takes that one itself)."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int | None
    max_tokens: int
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    top_logprobs: int


class SamplingKwargs(_Sampling, total=False):
    """Base sampling settings accepted by ``generate``/``stream``/``generate_many``."""

    stop: str | list[str] | None


class Orchestrator:
    """Fans N candidates per prompt out to one or more engines and ranks them.

    Use it as an async context manager; on exit, running requests are aborted
    and (with ``close_engines=True``, the default) the engines are closed::

        async with Orchestrator(VLLMEngine.default()) as orch:
            result = await orch.generate("What is 17 * 3?", n=8)

    Args:
        engines: one engine, or a mapping of route names to engines (the
            first is also reachable as ``"default"``).
        strategy: default strategy (``Fixed()``).
        rerankers: default rerankers, or a configured ``Ranker``
            (``[MeanLogProb()]``).
        max_in_flight: most candidates generating at once, over all requests.
        max_n: largest ``n`` accepted.
        timeout: default per-request deadline in seconds (None: none).
        close_engines: close the engines on exit.
        embedder: sentence-transformers model (or texts -> vectors callable)
            for the embedding distance of ``diversity=True``.

    Raises:
        ConfigError: no engine, bad limits.
    """

    def __init__(
        self,
        engines: Engine | Mapping[str, Engine],
        *,
        strategy: Strategy | None = None,
        rerankers: Rerankers | None = None,
        max_in_flight: int = 64,
        max_n: int = DEFAULT_MAX_N,
        timeout: float | None = None,
        close_engines: bool = True,
        embedder: Any = None,
    ) -> None:
        if isinstance(engines, Mapping):
            named = dict(engines)
            if not named:
                raise ConfigError("engines: give at least one engine", parameter="engines")
            named.setdefault("default", next(iter(named.values())))
        else:
            named = {"default": engines}
        for route, engine in named.items():
            if not isinstance(engine, Engine):
                raise ConfigError(f"engines: {route!r} is not an Engine (needs generate, abort, aclose)", parameter="engines")
        if max_in_flight < 1:
            raise ConfigError("max_in_flight: must be at least 1", parameter="max_in_flight", value=max_in_flight)
        if max_n < 1:
            raise ConfigError("max_n: must be at least 1", parameter="max_n", value=max_n)
        _check_timeout(timeout)
        self.engines = named
        self.strategy: Strategy = strategy or Fixed()
        self.ranker = _ranker(rerankers) if rerankers is not None else Ranker([MeanLogProb()])
        self.max_n = max_n
        self.timeout = timeout
        self.close_engines = close_engines
        self.embedder = embedder
        self._limiter = anyio.CapacityLimiter(max_in_flight)
        self._tg: TaskGroup | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Orchestrator:
        """Start engines that have a ``start()`` (e.g. load the model), then accept work."""
        for engine in {id(e): e for e in self.engines.values()}.values():
            if isinstance(engine, Startable):
                await engine.start()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            if self.close_engines:
                with anyio.CancelScope(shield=True):
                    for engine in {id(e): e for e in self.engines.values()}.values():
                        await engine.aclose()

    # -- building requests ---------------------------------------------------

    def request(
        self,
        prompt: Prompt,
        n: int = 8,
        *,
        system: str | None = None,
        chat: bool = True,
        source: str | None = None,
        metadata: dict[str, Any] | None = None,
        params: SamplingParams | None = None,
        **sampling: Unpack[SamplingKwargs],
    ) -> Request:
        """Build and validate a Request (nothing is generated).

        Raises:
            ConfigError: naming the first bad field, or ``n`` over ``max_n``.
        """
        base = (params or SamplingParams()).model_dump()
        base.update(sampling)
        request = Request(
            prompt=prompt,
            n=n,
            params=SamplingParams(**base),
            system=system,
            chat=chat,
            source=source,
            metadata=metadata or {},
        )
        self.check(request)
        return request

    def check(self, request: Request) -> None:
        """Reject a request this orchestrator cannot serve.

        Raises:
            ConfigError: ``n`` over ``max_n``.
        """
        if request.n > self.max_n:
            raise ConfigError(f"n: at most {self.max_n} candidates per prompt (got {request.n})", parameter="n", value=request.n)

    def plan(self, request: Request, strategy: Strategy | None = None) -> tuple[Request, list[CandidateSpec]]:
        """The request (with a seed drawn if it had none) and its validated plan.

        Raises:
            ConfigError: the plan's size or indices are wrong, or it names an
                unknown engine.
        """
        self.check(request)
        if request.params.seed is None:
            seed = secrets.randbelow(2**31)
            request = request.model_copy(update={"params": request.params.model_copy(update={"seed": seed})})
        strategy = strategy or self.strategy
        specs = checked_plan(strategy, request)
        for spec in specs:
            if spec.engine not in self.engines:
                known = ", ".join(sorted(self.engines))
                raise ConfigError(
                    f"strategy {type(strategy).__name__}: unknown engine {spec.engine!r}; known: {known}",
                    parameter="engine",
                    value=spec.engine,
                )
        return request, specs

    # -- generating ----------------------------------------------------------

    async def stream_request(
        self, request: Request, *, strategy: Strategy | None = None, timeout: float | None = None
    ) -> AsyncGenerator[Candidate, None]:
        """Yield the request's candidates as each finishes (unranked).

        Leaving the loop early, or being cancelled, aborts the engine requests
        still running.

        Raises:
            ConfigError: bad request or plan (before anything is generated).
            EngineDeadError: an engine died.
        """
        tg = self._require_open()
        timeout = self.timeout if timeout is None else timeout
        _check_timeout(timeout)
        request, specs = self.plan(request, strategy)
        send, receive = anyio.create_memory_object_stream[Candidate](len(specs))
        scope = anyio.CancelScope()
        done = anyio.Event()
        failure: list[BaseException] = []

        async def job() -> None:
            try:
                with scope:
                    await fan_out(request, specs, self.engines, send, self._limiter, timeout)
            except Exception as exc:
                failure.append(exc)
            finally:
                send.close()
                done.set()

        tg.start_soon(job)
        try:
            async with receive:
                async for candidate in receive:
                    yield candidate
        finally:
            scope.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await done.wait()
        if failure:
            raise failure[0]

    async def stream(
        self,
        prompt: Prompt,
        n: int = 8,
        *,
        strategy: Strategy | None = None,
        timeout: float | None = None,
        system: str | None = None,
        **sampling: Unpack[SamplingKwargs],
    ) -> AsyncIterator[Candidate]:
        """Yield candidates for ``prompt`` as each finishes (unranked).

        >>> async for candidate in orch.stream("Write a haiku", n=4):  # doctest: +SKIP
        ...     print(candidate.index, candidate.text)
        """
        request = self.request(prompt, n, system=system, **sampling)
        async with contextlib.aclosing(self.stream_request(request, strategy=strategy, timeout=timeout)) as candidates:
            async for candidate in candidates:
                yield candidate

    async def run(
        self,
        request: Request,
        *,
        strategy: Strategy | None = None,
        rerankers: Rerankers | None = None,
        timeout: float | None = None,
        diversity: bool = False,
        stop: StoppingRule | None = None,
        wave: int | None = None,
    ) -> Result:
        """Generate, rerank and return the ranked Result of a Request.

        ``diversity=True`` fills ``Result.diversity`` (distinct-n, self-BLEU,
        and embedding distance when the orchestrator has an ``embedder``).

        With a stopping rule (``stop=stopping.Beta(0.95)``) the plan is
        generated in waves of ``wave`` candidates (default 4), ranked after
        each, until the rule is satisfied; the rest is cancelled and
        ``Result.samples_used`` says how many were generated (see
        :mod:`nbest.orchestrator.adaptive`).
        """
        ranker = _ranker(rerankers) if rerankers is not None else self.ranker
        self.check(request)
        wave = check_adaptive(stop, wave)
        _check_timeout(timeout)
        if stop is not None and wave is not None:
            self._require_open()
            timeout = self.timeout if timeout is None else timeout
            result = await run_adaptive(
                self, request, rule=stop, wave=wave, ranker=ranker, limiter=self._limiter, strategy=strategy, timeout=timeout
            )
            return await add_diversity(result, embedder=self.embedder) if diversity else result
        started = time.perf_counter()
        candidates = [c async for c in self.stream_request(request, strategy=strategy, timeout=timeout)]
        result = await self.rank(request, candidates, ranker=ranker, generate_s=time.perf_counter() - started)
        if diversity:
            result = await add_diversity(result, embedder=self.embedder)
        return result

    async def generate(
        self,
        prompt: Prompt,
        n: int = 8,
        *,
        strategy: Strategy | None = None,
        rerankers: Rerankers | None = None,
        timeout: float | None = None,
        system: str | None = None,
        diversity: bool = False,
        stop: StoppingRule | str | list[str] | None = None,
        wave: int | None = None,
        **sampling: Unpack[_Sampling],
    ) -> Result:
        """Generate ``n`` candidates for ``prompt`` and return them ranked.

        A candidate that fails is kept with its ``error``; ``result.best`` is
        None only when every candidate failed. With ``stop`` (a stopping rule,
        :mod:`nbest.orchestrator.stopping`) candidates come in waves of
        ``wave`` and sampling ends once the rule is satisfied::

            result = await orch.generate(q, n=32, stop=stopping.Beta(0.95), wave=4)
            result.samples_used  # e.g. 8: two waves were enough

        ``stop`` is either that rule or, as in the other methods, the stop
        strings that end each candidate's text (a string or a list of them).

        Raises:
            ConfigError: bad input, before any generation.
            EngineDeadError: an engine died.
        """
        rule = stop if isinstance(stop, StoppingRule) else None
        strings = None if isinstance(stop, StoppingRule) else stop
        request = self.request(prompt, n, system=system, stop=strings, **sampling)
        return await self.run(
            request, strategy=strategy, rerankers=rerankers, timeout=timeout, diversity=diversity, stop=rule, wave=wave
        )

    async def generate_many(
        self,
        prompts: Sequence[Prompt | Request],
        n: int = 8,
        *,
        strategy: Strategy | None = None,
        rerankers: Rerankers | None = None,
        timeout: float | None = None,
        concurrency: int = 8,
        system: str | None = None,
        diversity: bool = False,
        **sampling: Unpack[SamplingKwargs],
    ) -> list[Result]:
        """Results for many prompts, in order, with at most ``concurrency``
        prompts in progress (candidates in flight stay under ``max_in_flight``).

        Every prompt is validated before anything is generated.
        """
        if concurrency < 1:
            raise ConfigError("concurrency: must be at least 1", parameter="concurrency", value=concurrency)
        ranker = _ranker(rerankers) if rerankers is not None else self.ranker
        requests = []
        for i, prompt in enumerate(prompts):
            try:
                if isinstance(prompt, Request):
                    self.check(prompt)
                    requests.append(prompt)
                else:
                    requests.append(self.request(prompt, n, system=system, **sampling))  # checks it too
            except ConfigError as exc:
                raise ConfigError(f"prompts[{i}]: {exc}", parameter=f"prompts[{i}].{exc.parameter}", value=exc.value) from None
        results: list[Result | None] = [None] * len(requests)
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(i: int, request: Request) -> None:
            async with limiter:
                results[i] = await self.run(request, strategy=strategy, rerankers=ranker, timeout=timeout, diversity=diversity)

        async with anyio.create_task_group() as tg:
            for i, request in enumerate(requests):
                tg.start_soon(one, i, request)
        return [r for r in results if r is not None]

    async def rank(
        self,
        request: Request,
        candidates: Sequence[Candidate],
        *,
        ranker: Ranker | None = None,
        generate_s: float = 0.0,
    ) -> Result:
        """Rerank finished candidates into a Result (used after ``stream``)."""
        ranker = ranker or self.ranker
        started = time.perf_counter()
        ranked = await ranker.rank(request, candidates)
        rerank_s = time.perf_counter() - started
        ok = [c for c in ranked.candidates if c.ok]
        return Result(
            id=request.id,
            prompt=request.prompt,
            n=request.n,
            candidates=ranked.candidates,
            best=ok[0] if ok else None,
            answers=ranked.answers,
            usage=Usage(
                prompt_tokens=sum(c.prompt_tokens for c in candidates),
                completion_tokens=sum(c.num_tokens for c in candidates),
            ),
            timings=Timings(generate_s=generate_s, rerank_s=rerank_s),
            warnings=ranked.warnings,
            metadata=request.metadata,
        )

    def _require_open(self) -> TaskGroup:
        if self._tg is None:
            raise NbestError("use the orchestrator as `async with Orchestrator(engine) as orch:`")
        return self._tg


def _ranker(rerankers: Rerankers) -> Ranker:
    return rerankers if isinstance(rerankers, Ranker) else Ranker(list(rerankers))


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout: must be a positive number of seconds or None", parameter="timeout", value=timeout)
