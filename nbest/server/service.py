"""What the routes share: the orchestrator, options parsed from HTTP bodies,
recent Results (so a choice can name one by id), metrics and the preference log.

Adaptive sampling and pruning (``until``, ``wave``, ``prune`` in :class:`Options`)
are parsed in one place, :meth:`Options.adaptive`, with the parsers of the command
line (:func:`~nbest.orchestrator.stopping.parse_rule`,
:func:`~nbest.orchestrator.pruning.parse_prune`), before any work; it also applies the
server's defaults (``ServerSettings.until``/``wave``/``prune``): a field the request
leaves out takes the server's, a field it sets wins, and a field it sets to null is
off (no rule, no pruning). A request with a
stopping rule runs through :meth:`Orchestrator.run <nbest.orchestrator.core.Orchestrator.run>`
(waves, ranked after each); :meth:`Service.events` hands its candidates on as they
finish all the same, so that the streaming routes stream them."""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from pydantic import Field
from starlette.requests import Request as HttpRequest

from nbest.errors import ConfigError
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.adaptive import check_adaptive
from nbest.orchestrator.pruning import PRUNE_TOP_LOGPROBS, Prune, check_prune, parse_prune
from nbest.orchestrator.stopping import StoppingRule
from nbest.rerankers.base import Reranker
from nbest.rerankers.ranker import Ranker
from nbest.rerankers.registry import RankerConfig, build_ranker, reranker_config
from nbest.server.errors import ApiError, from_config_error
from nbest.server.limits import check_plan, check_request, check_rerank_budget, rerank_deadline, result_bytes
from nbest.server.metrics import Metrics
from nbest.server.prefs import PreferenceStore
from nbest.server.ranker_api import MAX_SCOPE_CHARS, LiveRankers
from nbest.server.settings import MAX_RULE_CHARS, ServerSettings, parse_until
from nbest.server.supervisor import State, Supervisor, engine_health
from nbest.strategies.base import STRATEGIES, Strategy, rendered_limit
from nbest.types import Candidate, CandidateSpec, NbestModel, Request, Result

__all__ = ["Adaptive", "Options", "Service", "read_json", "until_disconnect"]

T = TypeVar("T")


MAX_CLIENT_RERANKERS = 16
"""Most rerankers one request may name (their names must differ; every kind a client may ask for fits)."""


class Options(NbestModel):
    """How candidates are planned and ranked: the ``nbest`` part of a body."""

    strategy: str | dict[str, Any] | None = None
    """A strategy short form (``ladder:0.3-1.2``) or config object (``{"kind": ...}``); None: the server's."""
    rerankers: list[str | dict[str, Any]] | None = Field(default=None, max_length=MAX_CLIENT_RERANKERS)
    """Rerankers: short forms ``NAME[:ARG][=WEIGHT]`` or config objects (``{"kind": "vote", "extract": "number"}``);
    only kinds safe for clients, at most 16; None: the server's."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds before unfinished candidates are dropped."""
    until: str | None = Field(default=None, max_length=MAX_RULE_CHARS)
    """A stopping rule, as ``--until`` takes it (``beta:0.95``, ``dirichlet:0.9:weighted``,
    ``confidence:0.8``, ``esc:4``): the plan is generated in waves of ``wave``, ranked after
    each, and sampling stops once the rule holds (``Result.samples_used`` says how many
    candidates were generated). Left out: the server's (``nbest serve --until``); null:
    none, all ``n`` at once."""
    wave: int | None = Field(default=None, ge=1)
    """Candidates per wave with ``until`` (at most ``n``). Left out: the server's ``--wave``
    with the server's rule, else 4 or the ``esc`` window; null: 4 or the ``esc`` window."""
    prune: str | None = Field(default=None, max_length=MAX_RULE_CHARS)
    """Online pruning, as ``--prune`` takes it (``KEEP[:WARMUP[:WINDOW]]``: ``0.9``, ``low:8``,
    ``0.5:4:32``): the first WARMUP candidates set a group-confidence threshold, later ones
    are stopped once they fall below it and come back with ``finish_reason="pruned"``
    (unranked, not voting). The engine must stream tokens. Left out: the server's
    (``nbest serve --prune``); null: no pruning."""

    def adaptive(self, n: int, prefix: str = "", defaults: ServerSettings | None = None) -> Adaptive:
        """``until``, ``wave`` and ``prune`` parsed (the one place the server parses them),
        for a request of ``n`` candidates, over the server's ``defaults``; ``prefix``
        (``nbest``) names the fields as the body has them.

        One rule for the three fields: left out of the body (not in ``model_fields_set``),
        the server's value applies; given, the request's wins; given as null, the field is
        off (``until``: no rule, all ``n`` at once; ``prune``: no pruning; ``wave``: the
        rule's own default). The server's ``wave`` goes with the server's rule: a request
        that sets ``until`` itself (a rule, or null) does not get it.

        Raises:
            ApiError: 422 naming the field (``until``, ``wave``, ``prune``, ``prune.keep`` ...)
                and what is allowed.

        >>> Options(until="esc:2", prune="0.5:2:8").adaptive(8)
        Adaptive(until=ESC(window=2), wave=2, prune=Prune(keep=0.5, warmup=2, window=8))
        >>> server = ServerSettings(until="beta:0.95", wave=2, prune="low")
        >>> Options().adaptive(8, defaults=server)
        Adaptive(until=Beta(threshold=0.95), wave=2, prune=Prune(keep=0.1, warmup=4, window=16))
        >>> Options(until=None, prune=None).adaptive(8, defaults=server)
        Adaptive(until=None, wave=None, prune=None)
        """
        p = f"{prefix}." if prefix else ""
        given = self.model_fields_set
        server = defaults or ServerSettings()
        until: StoppingRule | None = None
        if "until" not in given:
            until = server.stopping_rule()  # checked when the settings were made
        elif self.until is not None:
            try:
                until = parse_until(self.until)
            except ConfigError as exc:
                raise ApiError(422, f"{p}{exc}; null: no stopping rule", param=f"{p}until") from None
        wave = self.wave
        if "wave" not in given and "until" not in given:
            wave = server.wave
        elif wave is not None:
            if until is None:
                raise ApiError(
                    422,
                    f"{p}wave: only used with a stopping rule ({p}until, e.g. beta:0.95; this server has "
                    f"{'none' if server.until is None else repr(server.until)})",
                    param=f"{p}wave",
                )
            if wave > n:
                raise ApiError(422, f"{p}wave: at most n = {n} candidates per wave (got {wave})", param=f"{p}wave")
        try:
            wave = check_adaptive(until, wave)
        except ConfigError as exc:
            raise ApiError(422, f"{p}{exc}", param=f"{p}{exc.parameter or 'wave'}") from None
        prune: Prune | None = None
        if "prune" not in given:
            prune = server.prune_policy()
        elif self.prune is not None:
            try:
                prune = parse_prune(self.prune)
            except ConfigError as exc:
                raise ApiError(422, f"{p}{exc}; null: no pruning", param=f"{p}{exc.parameter or 'prune'}") from None
        return Adaptive(until, wave, prune)


@dataclass(frozen=True)
class Adaptive:
    """How a request is sampled beyond its plan: a stopping rule and its wave size
    (both None: every candidate at once) and a pruning policy (None: none)."""

    until: StoppingRule | None = None
    wave: int | None = None
    prune: Prune | None = None


MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a request body may have (nbest's own bodies need 8)."""
MAX_JSON_INT = 2**63 - 1
"""Largest magnitude of an integer in a request body (a signed 64-bit integer)."""


class _Bad:
    """A number the body may not carry, kept where it was parsed so its field can be named."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> int | _Bad:
    digits = len(text.lstrip("-"))
    if digits > 19:  # checked before converting: Python's int() is quadratic in the digits
        return _Bad(f"integer too large: at most {MAX_JSON_INT} in magnitude (got {digits} digits)")
    value = int(text)
    return value if abs(value) <= MAX_JSON_INT else _Bad(f"integer too large: at most {MAX_JSON_INT} in magnitude")


def _parse_float(text: str) -> float | _Bad:
    value = float(text)
    return value if math.isfinite(value) else _Bad(f"number out of range: {text[:20]} is not a finite float")


def _parse_constant(text: str) -> _Bad:
    return _Bad(f"{text} is not allowed: numbers must be finite")


def _field(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an unpaired \ud800 escape)
        return False
    return True


def _check_json(data: Any, strings: bool = False) -> None:
    """Reject nesting deeper than MAX_JSON_DEPTH and the numbers the parser marked
    (and, if ``strings``, text that is not valid Unicode), naming the field."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) >= MAX_JSON_DEPTH:
            field = _field(path[:1])
            raise ApiError(400, f"{field}: JSON nested deeper than {MAX_JSON_DEPTH} levels", param=field)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, [*path, key]))
            elif kind is _Bad:
                field = _field([*path, key])
                raise ApiError(422, f"{field}: {item.reason}", param=field)
            elif strings and ((kind is str and not _unicode(item)) or (type(key) is str and not _unicode(key))):
                field = _field([*path, key]) if _unicode(str(key)) else _field(path)
                raise ApiError(422, f"{field}: not valid Unicode text (a lone surrogate such as \\ud800)", param=field)


def read_json(body: bytes) -> Any:
    """The parsed body, or 400 saying where the JSON broke.

    The parse is bounded before any model is built: nesting deeper than
    ``MAX_JSON_DEPTH`` is 400; integers beyond 64 bits, non-finite numbers
    (``NaN``, ``Infinity``, ``1e999``) and text with a lone surrogate escape
    (``"\\ud800"``: not Unicode, it cannot be stored or sent) are 422 naming the field.

    >>> read_json(b'{"n": 4, "params": {"seed": NaN}}')
    Traceback (most recent call last):
    nbest.server.errors.ApiError: params.seed: NaN is not allowed: numbers must be finite
    """
    if not body.strip():
        raise ApiError(400, "request body is empty: send a JSON object", param="body")
    try:
        data = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiError(400, f"malformed JSON{where}: {exc}", param="body") from None
    except RecursionError:
        raise ApiError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", param="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(data).__name__}", param="body")
    # text is checked only when it may hold a surrogate: an escape, or raw bytes (json decodes them with surrogatepass)
    _check_json(data, strings=not body.isascii() or _SURROGATE_ESCAPE.search(body) is not None)
    return data


async def until_disconnect(http: HttpRequest, work: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``work``; cancel it (aborting its engine requests) if the client
    disconnects first, and return None then. Errors of ``work`` propagate as they are."""
    result: list[T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await http.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            result.append(await work())
        except Exception as exc:  # re-raised below, outside the task group (no ExceptionGroup)
            failure.append(exc)
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0] if result else None


class _Planned:
    """A plan already made (and checked), handed to the orchestrator as a strategy."""

    def __init__(self, specs: list[CandidateSpec]) -> None:
        self.specs = specs

    def plan(self, request: Request) -> list[CandidateSpec]:
        return self.specs


MAX_CLIENT_ID_CHARS = 200
"""Longest ``id`` a client may give a request (kept as ``metadata["client_id"]``)."""


class Service:
    """Shared state of one app."""

    def __init__(self, orchestrator: Orchestrator | None, settings: ServerSettings, prefs: PreferenceStore | None) -> None:
        """State over ``orchestrator`` (None: the app sets it once its factory made one).

        Raises:
            ConfigError: ``settings.prune`` with an engine of ``orchestrator`` that cannot stream
                tokens (refused now rather than on every request; see :meth:`ServerSettings.check_engines`).
        """
        if orchestrator is not None:
            settings.check_engines(orchestrator.engines)
        self.orchestrator = orchestrator
        self.settings = settings
        self.metrics = Metrics()
        self._prefs = prefs
        self._prefs_lock = threading.Lock()
        self._rerankers: dict[str, Reranker] = {}
        self._rerankers_lock = threading.Lock()
        self.results: OrderedDict[str, Result] = OrderedDict()
        self._result_sizes: dict[str, int] = {}
        self._plans: OrderedDict[str, list[CandidateSpec]] = OrderedDict()
        self.started = time.time()
        self.supervisor: Supervisor | None = None
        """Set by the app when it owns the orchestrator (a factory): restarts a dead engine."""
        self.retry_after_s = 5
        """The Retry-After of a 503 while the engine is (re)starting."""
        self.learning: LiveRankers | None = None
        """The learned rankers, when the server learns (``settings.learn``; see :meth:`start_learning`)."""

    @property
    def orch(self) -> Orchestrator:
        """The orchestrator, or 503 with Retry-After while there is none or its engine is dead."""
        orch = self.orchestrator
        if orch is None:
            status, detail = self.health()
            raise self.unavailable(f"the engine is {status}" + (f": {detail}" if detail else ""))
        health = engine_health(orch)
        if not health.ok and health.restart:
            status, detail = self.health()
            raise self.unavailable(f"the engine is {status}: {detail}")
        return orch

    def unavailable(self, message: str) -> ApiError:
        """503 with Retry-After (the engine is starting, restarting or dead)."""
        return ApiError(503, f"{message}; retry later", headers={"retry-after": str(self.retry_after_s)})

    def engine_failed(self) -> None:
        """A request met a dead engine: have the supervisor check now."""
        if self.supervisor is not None:
            self.supervisor.wake()

    @property
    def restarts(self) -> int:
        """How many times the engine was restarted."""
        return 0 if self.supervisor is None else self.supervisor.restarts

    def health(self) -> tuple[State, str]:
        """The state for ``/healthz`` and why it is not ``ok`` (see :mod:`nbest.server.supervisor`)."""
        supervisor = self.supervisor
        if supervisor is not None and supervisor.state != "ok":
            return supervisor.state, supervisor.detail
        orch = self.orchestrator
        if orch is None:
            return "starting", ""
        health = engine_health(orch)
        if health.ok:
            return "ok", ""
        if not health.restart:
            return "unhealthy", health.detail
        if supervisor is None:
            return "dead", health.detail
        supervisor.wake()
        return "restarting", health.detail

    @staticmethod
    def issue_id(request: Request, client_id: str | None = None) -> Request:
        """The request under an id this server issues; a client's own id is kept as
        ``metadata["client_id"]`` and names nothing on the server (two clients sending the
        same id cannot read, abort or choose for each other's work)."""
        metadata = dict(request.metadata)
        if client_id is not None:
            if len(client_id) > MAX_CLIENT_ID_CHARS:
                raise ApiError(422, f"id: at most {MAX_CLIENT_ID_CHARS} characters (got {len(client_id)})", param="id")
            metadata["client_id"] = client_id
        return request.model_copy(update={"id": "nb-" + uuid.uuid4().hex, "metadata": metadata})

    @property
    def prefs(self) -> PreferenceStore:
        with self._prefs_lock:
            if self._prefs is None:
                self._prefs = PreferenceStore(self.settings.preferences)
            return self._prefs

    def start_learning(self) -> LiveRankers:
        """The learned rankers, on the preference log, from the orchestrator's ranker
        (the base, version 0); the app runs their loop (:meth:`LiveRankers.run`).

        Raises:
            ConfigError: the server's ranker has a reranker without a config (nothing to learn from).
        """
        if self.learning is None:
            base = RankerConfig.of(self.orch.ranker)
            if base is None:
                names = ", ".join(r.name for r in self.orch.ranker.rerankers)
                raise ConfigError(
                    f"learn: the server's ranker ({names}) has a reranker without a config, so it cannot be refitted;"
                    " give --ranker or --reranker",
                    parameter="learn",
                )
            self.learning = LiveRankers(self.settings, self.prefs, base, self.learned_ranker)
        return self.learning

    def learned_ranker(self, config: RankerConfig) -> Ranker:
        """A learned config built into a Ranker through the one builder, with the server's
        reranker cache (a model loads once); run in a worker thread."""
        orch = self.orchestrator
        engine = next(iter(orch.engines.values())) if orch is not None else None  # a judge asks the default route
        with self._rerankers_lock:
            return build_ranker(
                config.rerankers, engine=engine, normalize=config.normalize, temperature=config.temperature, cache=self._rerankers
            )

    # -- validation ------------------------------------------------------------

    def check(self, request: Request, prefix: str = "") -> None:
        """Apply the server's limits (422 naming the field)."""
        p = f"{prefix}." if prefix else ""
        cap = min(self.settings.max_n, self.orch.max_n)
        if request.n > cap:
            raise ApiError(422, f"{p}n: at most {cap} candidates per request (got {request.n})", param=f"{p}n")
        check_request(self.settings, request, prefix)
        if self.settings.learn and self.settings.learn_scope != "global":
            for name in ("task", "user") if self.settings.learn_scope == "user" else ("task",):  # the scopes it may fall in
                label = request.metadata.get(name)
                if label is not None and (not isinstance(label, str) or len(label) > MAX_SCOPE_CHARS):
                    field = f"{p}metadata.{name}"
                    raise ApiError(
                        422,
                        f"{field}: a name rankers are learned for: text of at most {MAX_SCOPE_CHARS} characters",
                        param=field,
                    )

    async def plan(
        self,
        request: Request,
        strategy: Strategy | None,
        ranker: Ranker | None = None,
        prefix: str = "",
        prune: Prune | None = None,
        prune_field: str = "prune",
    ) -> tuple[Request, list[CandidateSpec]]:
        """The request (seeded) and its plan, made in a worker thread and held to the
        server's limits before anything is generated: each candidate's rendered prompt,
        sampling settings and their sum, and the budget of a client's expensive rerankers
        (``ranker``). With ``prune``, every engine of the plan must stream tokens and the
        alternatives pruning asks for must be within ``max_top_logprobs`` (422 naming
        ``prune_field``, the field as the body has it). Otherwise 422 naming the field.
        :meth:`stream` then sends this plan as it is."""
        orch = self.orch
        limit = self.settings.max_prompt_chars

        def plan() -> tuple[Request, list[CandidateSpec]]:
            with rendered_limit(limit):
                return orch.plan(request, strategy)

        try:
            request, specs = await anyio.to_thread.run_sync(plan)
        except ConfigError as exc:
            raise from_config_error(exc, prefix) from None
        check_plan(self.settings, request, specs, ranker, prefix)
        if prune is not None:
            self._check_prune(prune, specs, prune_field)
        self._plans[request.id] = specs
        while len(self._plans) > 256:  # plans never streamed (the client left first)
            self._plans.popitem(last=False)
        return request, specs

    def _check_prune(self, prune: Prune, specs: list[CandidateSpec], field: str) -> None:
        """422 naming ``field`` (the body's ``prune``) when the plan cannot be pruned here: an engine that cannot
        stream tokens (the orchestrator's own check, made now rather than mid-request), or
        a candidate that asks for no alternatives while the server allows fewer than the
        :data:`~nbest.orchestrator.pruning.PRUNE_TOP_LOGPROBS` pruning then asks for."""
        try:
            check_prune(prune, self.orch.engines, specs)
        except ConfigError as exc:
            # the server's own pruning (a factory's engine, not checked at start) is the client's to turn off
            off = f"; this server prunes by default: set {field} to null for none" if self.settings.prune else ""
            raise ApiError(422, f"{field}{str(exc).removeprefix('prune')}{off}", param=field) from None
        needs = len(specs) > prune.warmup and any(spec.params.top_logprobs < 1 for spec in specs)
        if needs and self.settings.max_top_logprobs < PRUNE_TOP_LOGPROBS:
            raise ApiError(
                422,
                f"{field}: pruning reads {PRUNE_TOP_LOGPROBS} alternatives per token, and this server allows at most "
                f"{self.settings.max_top_logprobs} (max_top_logprobs); set top_logprobs from 1 to "
                f"{self.settings.max_top_logprobs} to prune on those",
                param=field,
            )

    async def strategy(self, spec: str | dict[str, Any] | None, param: str = "strategy") -> Strategy | None:
        """A client's strategy (short form or config object; no files), built in a worker
        thread (a large config takes a while to validate), or 422 naming ``param``."""
        if spec is None:
            return None
        try:
            return await anyio.to_thread.run_sync(lambda: STRATEGIES.build(spec, files=False))
        except ConfigError as exc:
            raise ApiError(422, f"{param}: {exc}" if not str(exc).startswith(param) else str(exc), param=param) from None

    def ranker(
        self, specs: list[str | dict[str, Any]] | None, param: str = "rerankers", *, request: Request | None = None
    ) -> Ranker | None:
        """A client's rerankers, built through the one builder with ``for_client=True``
        (only kinds safe for clients; no files). Built rerankers are cached by
        their canonical config, so a model loads once however it is spelled.
        With ``request``, an expensive kind is held to the rerank budget (largest
        ``n``, largest ``n × max_tokens``) before anything is built."""
        if specs is None:
            return None
        if not specs:
            raise ApiError(422, f"{param}: give at least one reranker, or leave it out for the server's", param=param)
        allowed = self.settings.rerankers_allowed
        for i, spec in enumerate(specs):
            try:
                kind = reranker_config(spec, files=False).registry_kind
            except ConfigError as exc:
                raise ApiError(422, f"{param}[{i}]: {exc}", param=f"{param}[{i}]") from None
            if allowed is not None and kind not in allowed:
                raise ApiError(
                    422,
                    f"{param}[{i}]: reranker {kind!r} is not offered here; allowed: {', '.join(allowed)}",
                    param=f"{param}[{i}]",
                )
            if request is not None and kind in self.settings.expensive_rerankers:
                check_rerank_budget(self.settings, kind, request.n, request.n * request.params.max_tokens)
        try:
            with self._rerankers_lock:
                ranker = build_ranker(specs, for_client=True, cache=self._rerankers)
                while len(self._rerankers) > 64:  # the 64 latest configs are kept
                    del self._rerankers[next(iter(self._rerankers))]
            return ranker
        except ConfigError as exc:
            parameter = exc.parameter if exc.parameter and exc.parameter.startswith(param) else param
            raise ApiError(422, str(exc), param=parameter) from None

    # -- running ---------------------------------------------------------------

    def remember(self, result: Result) -> None:
        """Keep ``result`` so a choice can name it, within ``remember_results`` and
        ``remember_bytes`` (the oldest go first; one larger than the bound is not kept)."""
        size = result_bytes(result)
        if self.settings.remember_results == 0 or size > self.settings.remember_bytes:
            return
        self.results[result.id] = result
        self.results.move_to_end(result.id)
        self._result_sizes[result.id] = size
        kept = self.remembered_bytes
        while len(self.results) > self.settings.remember_results or kept > self.settings.remember_bytes:
            old, _ = self.results.popitem(last=False)
            kept -= self._result_sizes.pop(old, 0)

    @property
    def remembered_bytes(self) -> int:
        """The estimated size of the Results kept."""
        return sum(self._result_sizes.get(ident, 0) for ident in self.results)

    async def run(self, request: Request, options: Options, adaptive: Adaptive | None = None) -> Result:
        """Plan, generate and rank ``request`` (``adaptive``: parsed by :meth:`Options.adaptive`)."""
        adaptive = adaptive or Adaptive()
        strategy = await self.strategy(options.strategy)
        ranker = self.ranker(options.rerankers, request=request)
        request, _ = await self.plan(request, strategy, ranker, prune=adaptive.prune)
        return await self.generate(request, options, adaptive, strategy, ranker)

    async def generate(
        self, request: Request, options: Options, adaptive: Adaptive, strategy: Strategy | None, ranker: Ranker | None
    ) -> Result:
        """The ranked Result of ``request``, planned by :meth:`plan` (see :meth:`events`)."""
        result: Result | None = None
        async with contextlib.aclosing(self.events(request, options, adaptive, strategy, ranker)) as events:
            async for event in events:
                if isinstance(event, Result):
                    result = event
        assert result is not None  # events ends with the Result or raises
        return result

    async def events(
        self, request: Request, options: Options, adaptive: Adaptive, strategy: Strategy | None, ranker: Ranker | None
    ) -> AsyncGenerator[Candidate | Result, None]:
        """Each candidate as it finishes (pruned ones with ``finish_reason="pruned"``), then
        the ranked Result, kept for choices. ``request`` was planned by :meth:`plan`.

        With a stopping rule the candidates come from :meth:`Orchestrator.run
        <nbest.orchestrator.core.Orchestrator.run>` (waves, ranked after each) and the Result
        lists only those of the waves that were ranked (``samples_used``): a candidate of the
        wave the rule cancelled may have been handed on before the rule stopped; it is not
        in the Result (its tokens are in ``usage``). Closing this generator aborts what is
        still generating.

        Raises:
            ConfigError: a plan the orchestrator refuses; EngineDeadError: the engine died.
        """
        if adaptive.until is None:
            started = time.perf_counter()
            candidates: list[Candidate] = []
            async with contextlib.aclosing(self.stream(request, options, strategy, adaptive.prune)) as stream:
                async for candidate in stream:
                    candidates.append(candidate)
                    yield candidate
            yield await self.finish(request, candidates, ranker, time.perf_counter() - started, timeout=options.timeout)
            return
        send, receive = anyio.create_memory_object_stream[Candidate](request.n)  # each candidate is handed on once
        outcome: list[Result | Exception] = []

        async def work() -> None:
            try:
                with send:
                    outcome.append(await self._run_waves(request, options, adaptive, strategy, ranker, send.send))
            except Exception as exc:  # re-raised below, in the caller's task
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            with receive:
                async for candidate in receive:
                    yield candidate
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        yield outcome[0]

    async def _run_waves(
        self,
        request: Request,
        options: Options,
        adaptive: Adaptive,
        strategy: Strategy | None,
        ranker: Ranker | None,
        observe: Callable[[Candidate], Awaitable[None]],
    ) -> Result:
        """``request`` through :meth:`Orchestrator.run` with the stopping rule; ``observe``
        sees every candidate as it finishes. The ranker is the one :meth:`finish` would
        use (the client's, else the learned one of the request's scope, else the
        server's), each wave's ranking bounded by ``rerank_timeout_s`` or the deadline."""
        orch = self.orch
        timeout = options.timeout or self.settings.timeout_s
        specs = self._plans.pop(request.id, None)
        if specs is not None:
            strategy = _Planned(specs)
        version = None
        if ranker is None and self.learning is not None:
            served = self.learning.pick(request.metadata)
            ranker, version = served.ranker, served.version
        bounded = (ranker or orch.ranker).bounded(rerank_deadline(self.settings, timeout, 0.0))

        async def seen(candidate: Candidate) -> None:
            self.metrics.candidate(candidate)
            await observe(candidate)

        result = await orch.run(
            request,
            strategy=strategy,
            rerankers=bounded,
            timeout=timeout,
            until=adaptive.until,
            wave=adaptive.wave,
            prune=adaptive.prune,
            on_candidate=seen,
        )
        if version is not None:
            result = result.model_copy(update={"ranker_version": version})
        self.remember(result)
        return result

    async def stream(
        self, request: Request, options: Options, strategy: Strategy | None, prune: Prune | None = None
    ) -> AsyncGenerator[Candidate, None]:
        """Candidates as they finish; closing this generator aborts the rest. A request
        :meth:`plan` planned is sent as planned (not planned again on the event loop).
        ``prune``: stop weak candidates while they generate (they come with
        ``finish_reason="pruned"``)."""
        orch = self.orch
        timeout = options.timeout or self.settings.timeout_s
        specs = self._plans.pop(request.id, None)
        if specs is not None:
            strategy = _Planned(specs)
        gen = orch.stream_request(request, strategy=strategy, timeout=timeout, prune=prune)
        try:
            async for candidate in gen:
                self.metrics.candidate(candidate)
                yield candidate
        finally:
            await gen.aclose()

    async def finish(
        self,
        request: Request,
        candidates: list[Candidate],
        ranker: Ranker | None,
        generate_s: float = 0.0,
        *,
        timeout: float | None = None,
    ) -> Result:
        """Rank the candidates (off the event loop, under what is left of the deadline:
        ``timeout`` or the server's) and keep the Result for choices. Without a client's
        ``ranker``, a learning server ranks with the learned ranker of the request's scope
        and records its version in ``Result.ranker_version``."""
        orch = self.orch
        deadline = rerank_deadline(self.settings, timeout or self.settings.timeout_s, generate_s)
        version = None
        if ranker is None and self.learning is not None:
            served = self.learning.pick(request.metadata)  # one whole ranker, whatever swaps meanwhile
            ranker, version = served.ranker, served.version
        ranker = (ranker or orch.ranker).bounded(deadline)
        result = await orch.rank(request, candidates, ranker=ranker, generate_s=generate_s)
        if version is not None:
            result = result.model_copy(update={"ranker_version": version})
        self.remember(result)
        return result
