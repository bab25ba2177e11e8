"""The Orchestrator: plan, fan out, stream, rank."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypedDict, Unpack

import anyio
from anyio.abc import TaskGroup

from nbest.engines.base import Engine, SharesCpu, Startable, describe_engine
from nbest.errors import ConfigError, NbestError
from nbest.metrics.diversity import add_diversity
from nbest.orchestrator.adaptive import OnCandidate, check_adaptive, run_adaptive
from nbest.orchestrator.fanout import fan_out
from nbest.orchestrator.many import check_count, run_many
from nbest.orchestrator.pruning import Prune, PruneRun, check_prune
from nbest.orchestrator.stopping import StoppingRule, check_stop_strings
from nbest.rerankers.base import Reranker
from nbest.rerankers.logprob import MeanLogProb
from nbest.rerankers.ranker import Preparation, Ranker
from nbest.rerankers.registry import RankerConfig
from nbest.strategies.base import Strategy, checked_plan
from nbest.strategies.fixed import Fixed
from nbest.types import DEFAULT_MAX_N, Candidate, CandidateSpec, Prompt, Request, Result, SamplingParams, Timings, Usage

__all__ = ["Orchestrator", "Rerankers", "SamplingKwargs", "as_ranker", "check_run_settings"]

Rerankers = Sequence[Reranker] | Ranker
"""Rerankers, or a configured Ranker."""


class SamplingKwargs(TypedDict, total=False):
    """Base sampling settings accepted by ``request``/``generate``/``stream``/``generate_many``:
    the fields of :class:`~nbest.types.SamplingParams`, as keywords (a test checks
    that none is missing). ``stop`` takes stop strings only; a stopping rule goes
    in ``until=``."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int | None
    max_tokens: int
    stop: str | list[str] | None
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    ignore_eos: bool
    top_logprobs: int


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
        check_count(max_in_flight, "max_in_flight")
        check_count(max_n, "max_n")
        _check_timeout(timeout)
        self.engines = named
        self.strategy: Strategy = strategy or Fixed()
        self.ranker = as_ranker(rerankers) if rerankers is not None else Ranker([MeanLogProb()])
        self.max_n = max_n
        self.timeout = timeout
        self.close_engines = close_engines
        self.embedder = embedder
        self._limiter = anyio.CapacityLimiter(max_in_flight)
        self._tg: TaskGroup | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Orchestrator:
        """Start engines that have a ``start()`` (e.g. load the model), then accept work.
        Engines that compute on this machine's CPU (:class:`~nbest.engines.base.SharesCpu`)
        get a share of its cores each first, so they do not wait on each other's threads."""
        unique = list({id(e): e for e in self.engines.values()}.values())
        local = [engine for engine in unique if isinstance(engine, SharesCpu)]
        for index, engine in enumerate(local):
            engine.share_cpu(index, len(local))
        for one in unique:
            if isinstance(one, Startable):
                await one.start()
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
            ConfigError: naming the first bad field, ``n`` over ``max_n``, or a
                stopping rule given as ``stop`` (it goes in ``until=`` of
                ``run``/``generate``).
        """
        check_stop_strings(sampling.get("stop"))
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
        self,
        request: Request,
        *,
        strategy: Strategy | None = None,
        timeout: float | None = None,
        prune: Prune | None = None,
    ) -> AsyncGenerator[Candidate, None]:
        """Yield the request's candidates as each finishes (unranked).

        Leaving the loop early, or being cancelled, aborts the engine requests
        still running. With ``prune`` (:class:`~nbest.orchestrator.pruning.Prune`),
        weak candidates are stopped while they generate and yielded with
        ``finish_reason="pruned"``.

        Raises:
            ConfigError: bad request, plan or ``prune`` (before anything is generated).
            EngineDeadError: an engine died.
        """
        self._require_open()
        timeout = self.timeout if timeout is None else timeout
        _check_timeout(timeout)
        request, specs, pruning = self._planned(request, strategy, prune)
        async with contextlib.aclosing(self._stream_planned(request, specs, timeout, pruning)) as candidates:
            async for candidate in candidates:
                yield candidate

    def _planned(
        self, request: Request, strategy: Strategy | None, prune: object
    ) -> tuple[Request, list[CandidateSpec], PruneRun | None]:
        """The request, its plan and its pruning state (see :meth:`plan` and
        :meth:`PruneRun.plan <nbest.orchestrator.pruning.PruneRun.plan>`).

        Raises:
            ConfigError: a bad plan, ``prune`` not a Prune, or an engine of the plan
                that cannot stream tokens while ``prune`` has candidates to prune.
        """
        checked = check_prune(prune)
        request, specs = self.plan(request, strategy)
        check_prune(checked, self.engines, specs)
        pruning, specs = PruneRun.plan(checked, specs)
        return request, specs, pruning

    def check_request(self, request: Request, strategy: Strategy | None = None, prune: Prune | None = None) -> None:
        """What :meth:`run` checks of ``request`` before generating anything (its
        ``n``, its plan, pruning against the plan's engines), without running it;
        the orchestrator need not be started. :meth:`as_completed` calls it on
        every request, ``nbest batch`` on every input line as it reads them.

        Raises:
            ConfigError: what :meth:`run` would raise for this request's plan.
        """
        self._planned(request, strategy, prune)

    async def _stream_planned(
        self, request: Request, specs: list[CandidateSpec], timeout: float | None, pruning: PruneRun | None
    ) -> AsyncGenerator[Candidate, None]:
        tg = self._require_open()
        send, receive = anyio.create_memory_object_stream[Candidate](len(specs))
        scope = anyio.CancelScope()
        done = anyio.Event()
        failure: list[BaseException] = []

        async def job() -> None:
            try:
                with scope:
                    await fan_out(request, specs, self.engines, send, self._limiter, timeout, pruning=pruning)
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
        prune: Prune | None = None,
        **sampling: Unpack[SamplingKwargs],
    ) -> AsyncIterator[Candidate]:
        """Yield candidates for ``prompt`` as each finishes (unranked); ``prune``: as in
        :meth:`stream_request`.

        >>> async for candidate in orch.stream("Write a haiku", n=4):  # doctest: +SKIP
        ...     print(candidate.index, candidate.text)
        """
        request = self.request(prompt, n, system=system, **sampling)
        stream = self.stream_request(request, strategy=strategy, timeout=timeout, prune=prune)
        async with contextlib.aclosing(stream) as candidates:
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
        until: StoppingRule | None = None,
        wave: int | None = None,
        prune: Prune | None = None,
        on_candidate: OnCandidate | None = None,
    ) -> Result:
        """Generate, rerank and return the ranked Result of a Request.

        ``diversity=True`` fills ``Result.diversity`` (distinct-n, self-BLEU,
        and embedding distance when the orchestrator has an ``embedder``).

        With a stopping rule (``until=stopping.Beta(0.95)``) the plan is
        generated in waves of ``wave`` candidates (default 4), ranked after
        each, until the rule is satisfied; the rest is cancelled and
        ``Result.samples_used`` says how many were generated (see
        :mod:`nbest.orchestrator.adaptive`).

        With a pruning policy (``prune=Prune(keep=0.9, warmup=4, window=16)``, DeepConf
        online) the first ``warmup`` candidates are generated in full and set a
        group-confidence threshold; every later one is watched token by token and
        stopped (its engine request aborted) once it falls below: it stays in the
        Result with ``finish_reason="pruned"``, its partial text and signals, unranked,
        and does not vote (see :mod:`nbest.orchestrator.pruning`). Works with ``until``.

        ``on_candidate`` is awaited with each candidate as it finishes, before it is
        ranked (e.g. to stream it to a client); with ``until``, candidates of a wave the
        rule then cancels are shown too, and the Result says which count
        (``samples_used``). It must not raise.

        Raises:
            ConfigError: a bad request, plan, ``until``/``wave``, ``prune`` (or an
                engine that cannot stream tokens for it) or timeout (before anything
                is generated).
            EngineDeadError: an engine died.
        """
        ranker = as_ranker(rerankers) if rerankers is not None else self.ranker
        self.check(request)
        wave = check_adaptive(until, wave)
        _check_timeout(timeout)
        self._require_open()
        planned, specs, pruning = self._planned(request, strategy, prune)
        if until is not None and wave is not None:
            preparation = ranker.preparation(planned)

            async def handed(candidate: Candidate) -> None:
                if on_candidate is not None:
                    await on_candidate(candidate)
                if preparation is not None:
                    await preparation.add(candidate)

            async def rank(candidates: list[Candidate], generate_s: float) -> Result:
                return await self.rank(
                    planned, candidates, ranker=ranker, generate_s=generate_s, prepared=preparation, release=False
                )

            try:
                result = await run_adaptive(
                    planned,
                    specs,
                    engines=self.engines,
                    rank=rank,
                    until=until,
                    wave=wave,
                    limiter=self._limiter,
                    timeout=self.timeout if timeout is None else timeout,
                    on_candidate=None if preparation is None and on_candidate is None else handed,
                    pruning=pruning,
                )
            finally:
                ranker.release(planned)
        else:
            started = time.perf_counter()
            prepared = ranker.preparation(request)
            candidates: list[Candidate] = []
            failure: Exception | None = None
            try:
                async with anyio.create_task_group() as preparing:  # prepare never raises: see Preparation.add
                    try:
                        async with contextlib.aclosing(
                            self._stream_planned(planned, specs, self.timeout if timeout is None else timeout, pruning)
                        ) as stream:
                            async for candidate in stream:
                                candidates.append(candidate)
                                if on_candidate is not None:
                                    await on_candidate(candidate)
                                if prepared is not None:
                                    preparing.start_soon(prepared.add, candidate)
                    except Exception as exc:  # re-raised as is, not in an exception group
                        failure = exc
                        preparing.cancel_scope.cancel()
                    last = time.perf_counter()
            except BaseException:
                ranker.release(request)
                raise
            if failure is not None:
                ranker.release(request)
                raise failure
            result = await self.rank(
                request, candidates, ranker=ranker, generate_s=last - started, prepared=prepared, last_at=last
            )
        if pruning is not None and pruning.warnings:
            result = result.model_copy(update={"warnings": [*result.warnings, *pruning.warnings]})
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
        until: StoppingRule | None = None,
        wave: int | None = None,
        prune: Prune | None = None,
        **sampling: Unpack[SamplingKwargs],
    ) -> Result:
        """Generate ``n`` candidates for ``prompt`` and return them ranked.

        A candidate that fails is kept with its ``error``; ``result.best`` is
        None only when every candidate failed. With ``until`` (a stopping
        rule, :mod:`nbest.orchestrator.stopping`) candidates come in waves of
        ``wave`` and sampling ends once the rule is satisfied::

            result = await orch.generate(q, n=32, until=stopping.Beta(0.95), wave=4)
            result.samples_used  # e.g. 8: two waves were enough

        With ``prune`` weak candidates are stopped while they generate (see :meth:`run`)::

            result = await orch.generate(q, n=16, prune=Prune(keep=0.9))
            [c.index for c in result.candidates if c.pruned]  # e.g. [6, 11]

        ``stop``, as in the other methods, takes the stop strings that end
        each candidate's text (a string or a list of them).

        Raises:
            ConfigError: bad input (a stopping rule given as ``stop`` too),
                before any generation.
            EngineDeadError: an engine died.
        """
        request = self.request(prompt, n, system=system, **sampling)
        return await self.run(
            request,
            strategy=strategy,
            rerankers=rerankers,
            timeout=timeout,
            diversity=diversity,
            until=until,
            wave=wave,
            prune=prune,
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
        diversity: bool = False,
        until: StoppingRule | None = None,
        wave: int | None = None,
        prune: Prune | None = None,
        system: str | None = None,
        **sampling: Unpack[SamplingKwargs],
    ) -> list[Result]:
        """The Results of many prompts, in input order: :meth:`as_completed`,
        collected. A prompt is text, chat messages or a built Request; ``n``,
        ``system`` and the sampling keywords build the requests of the others.

        Raises:
            ConfigError: ``prompts[i]: ...`` for a prompt that cannot be built
                or served, or a bad setting; before anything is generated.
            EngineDeadError: an engine died; the prompts still running are aborted.
        """
        requests = []
        for i, prompt in enumerate(prompts):
            try:
                requests.append(prompt if isinstance(prompt, Request) else self.request(prompt, n, system=system, **sampling))
            except ConfigError as exc:
                raise _at(f"prompts[{i}]", exc) from None
        results: dict[int, Result] = {}
        finished = self._as_completed(
            requests,
            strategy=strategy,
            rerankers=rerankers,
            timeout=timeout,
            concurrency=concurrency,
            diversity=diversity,
            until=until,
            wave=wave,
            prune=prune,
            name="prompts",
        )
        async with contextlib.aclosing(finished):
            async for i, result in finished:
                results[i] = result
        return [results[i] for i in range(len(requests))]

    def as_completed(
        self,
        requests: Iterable[Request],
        *,
        strategy: Strategy | None = None,
        rerankers: Rerankers | None = None,
        timeout: float | None = None,
        concurrency: int = 8,
        diversity: bool = False,
        until: StoppingRule | None = None,
        wave: int | None = None,
        prune: Prune | None = None,
    ) -> AsyncGenerator[tuple[int, Result], None]:
        """Run many requests; yield ``(i, result)`` as each is ranked, ``i``
        being the request's position in ``requests`` (ids need not be unique;
        ``result.id`` is the request's id).

        Each request runs as :meth:`run` runs it, with these keywords.
        Requests start in input order, at most ``concurrency`` in progress at
        once; the candidates in flight over all of them stay under
        ``max_in_flight``. The settings are checked by this call. Given a list
        (any ``Sequence``), so is every request and its plan, before anything
        is generated. Given any other iterable (a generator parsing a file a
        line at a time), a request is taken only when a slot frees, so at most
        ``concurrency`` are held, and checked as it is taken
        (:meth:`check_request`): one that fails stops the run as a dead engine
        does, with the same ``requests[i]: ...`` error a list would get, and
        nothing after it starts. Leaving the loop early (close the iterator,
        e.g. with ``contextlib.aclosing``), or being cancelled, aborts the
        requests still running (see :mod:`nbest.orchestrator.many`)::

            async for i, result in orch.as_completed(requests, concurrency=16):
                print(requests[i].id, result.best.text if result.best else "(all failed)")

        Raises:
            ConfigError: a bad setting, or ``requests[i]: ...`` for a request
                that cannot be served (a list's: before anything runs; an
                iterable's: when it is taken, the requests still running
                aborted).
            EngineDeadError: an engine died; the requests still running are
                aborted and nothing more is yielded.
            NbestError: the orchestrator closed before every request finished.
            Exception: what a lazy iterable raised while it was read (the
                requests still running aborted).
        """
        return self._as_completed(
            requests,
            strategy=strategy,
            rerankers=rerankers,
            timeout=timeout,
            concurrency=concurrency,
            diversity=diversity,
            until=until,
            wave=wave,
            prune=prune,
            name="requests",
        )

    def _as_completed(
        self,
        requests: Iterable[Request],
        *,
        strategy: Strategy | None,
        rerankers: Rerankers | None,
        timeout: float | None,
        concurrency: int,
        diversity: bool,
        until: StoppingRule | None,
        wave: int | None,
        prune: Prune | None,
        name: str,
    ) -> AsyncGenerator[tuple[int, Result], None]:
        tg = self._require_open()
        check_run_settings(concurrency=concurrency, timeout=timeout, until=until, wave=wave, prune=prune)
        ranker = as_ranker(rerankers) if rerankers is not None else self.ranker
        check = None
        if isinstance(requests, Sequence):
            for i, request in enumerate(requests):
                self._check_at(i, request, strategy, prune, name)
        else:  # each as it is taken

            def check(i: int, request: Request) -> Request:
                return self._check_at(i, request, strategy, prune, name)

        async def run(request: Request) -> Result:
            return await self.run(
                request,
                strategy=strategy,
                rerankers=ranker,
                timeout=timeout,
                diversity=diversity,
                until=until,
                wave=wave,
                prune=prune,
            )

        return run_many(tg, requests, run, concurrency, check)

    def _check_at(self, i: int, request: object, strategy: Strategy | None, prune: Prune | None, name: str) -> Request:
        """``request``, the ``i``-th of ``name``, when this orchestrator can serve it.

        Raises:
            ConfigError: ``name[i]: ...``: not a Request, or what :meth:`check_request` raised.
        """
        if not isinstance(request, Request):
            raise ConfigError(f"{name}[{i}]: not a Request (got {type(request).__name__}); build one with request()")
        try:
            self.check_request(request, strategy, prune)
        except ConfigError as exc:
            raise _at(f"{name}[{i}]", exc) from None
        return request

    async def rank(
        self,
        request: Request,
        candidates: Sequence[Candidate],
        *,
        ranker: Ranker | None = None,
        generate_s: float = 0.0,
        prepared: Preparation | None = None,
        last_at: float | None = None,
        release: bool = True,
    ) -> Result:
        """Rerank finished candidates into a Result (used after ``stream``).

        ``prepared``: the per-candidate work done as they finished
        (:meth:`Ranker.preparation <nbest.rerankers.ranker.Ranker.preparation>`);
        ``last_at``: when the last one arrived (``time.perf_counter()``), the
        start of ``timings.rerank_after_last_s`` (default: now); ``release``:
        drop what the rerankers cached for the request once ranked.
        """
        ranker = ranker or self.ranker
        started = time.perf_counter()
        ranked = await ranker.rank(request, candidates, prepared, release=release)
        ended = time.perf_counter()
        rerank_s = ended - started
        after_last = ended - (started if last_at is None else last_at)
        ok = [c for c in ranked.candidates if c.complete]
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
            timings=Timings(generate_s=generate_s, rerank_s=rerank_s, rerank_after_last_s=after_last),
            warnings=ranked.warnings,
            metadata=request.metadata,
            ranker=ranker_config(ranker),
            engines=self._describe_routes(c.spec.engine for c in candidates),
        )

    def _describe_routes(self, routes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What ``Result.engines`` records: what the engine of each of ``routes`` runs with
        (:func:`~nbest.engines.base.describe_engine`), by route; a route this orchestrator
        does not have is left out."""
        return {route: describe_engine(self.engines[route]) for route in sorted(set(routes)) if route in self.engines}

    def _require_open(self) -> TaskGroup:
        if self._tg is None:
            raise NbestError("use the orchestrator as `async with Orchestrator(engine) as orch:`")
        return self._tg


def _at(where: str, exc: ConfigError) -> ConfigError:
    """``exc`` with ``where`` (``requests[3]``) in front of its message and parameter."""
    parameter = f"{where}.{exc.parameter}" if exc.parameter else where
    return ConfigError(f"{where}: {exc}", parameter=parameter, value=exc.value)


def as_ranker(rerankers: Rerankers) -> Ranker:
    """``rerankers`` as one Ranker (a Ranker stays as it is)."""
    return rerankers if isinstance(rerankers, Ranker) else Ranker(list(rerankers))


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout: must be a positive number of seconds or None", parameter="timeout", value=timeout)


def check_run_settings(
    *, concurrency: int, timeout: float | None, until: StoppingRule | None, wave: int | None, prune: Prune | None
) -> None:
    """The settings of a run of many requests, checked once before any starts
    (:meth:`Orchestrator.as_completed`, and ``nbest batch`` over a lazy input).

    Raises:
        ConfigError: naming the setting that is wrong.
    """
    check_count(concurrency, "concurrency")
    _check_timeout(timeout)
    check_adaptive(until, wave)
    check_prune(prune)


def ranker_config(ranker: Ranker) -> dict[str, Any] | None:
    """What ``Result.ranker`` records: the ranker's config, when it has one."""
    config = RankerConfig.of(ranker)
    return None if config is None else config.model_dump(mode="json")
