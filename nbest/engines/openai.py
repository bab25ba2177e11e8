"""``OpenAIEngine``: candidates from one or many OpenAI-compatible servers.

A fleet of vLLM servers (``python -m vllm.entrypoints.openai.api_server`` /
``vllm serve``, each with its own tensor/pipeline/data parallelism) behind
nbest's balancer (:mod:`nbest.engines.fleet`): least outstanding requests per
endpoint, a concurrency cap and a weight per endpoint, failover of a failed
endpoint's requests to a healthy one, and a background probe that brings a
down endpoint back. Text prompts go to ``/completions``, chat prompts to
``/chat/completions``; vLLM's extra sampling fields (``top_k``, ``min_p``,
``repetition_penalty``) travel in the request body.

Answers are streamed (``stream: true``), so a silent endpoint is told from a
long generation: ``read_timeout`` bounds each wait for the next bytes (the
response headers, the next token), ``request_timeout`` the whole candidate.

Failures and what they cost:

- the connection fails (refused, reset, silent for ``read_timeout``): the
  endpoint is marked down at once and its other requests move to healthy
  endpoints;
- it answers, but wrongly (HTTP 429 or 5xx, a body that is not an OpenAI
  response, no choices): that candidate moves to another endpoint and the
  endpoint gets a strike; ``max_strikes`` in a row mark it down. Its other
  requests keep running;
- HTTP 4xx: the request may be at fault, so it is tried once on another
  endpoint; if that one serves it, the first gets a strike, if it also
  refuses, the candidate fails with the server's message;
- past ``request_timeout``: the candidate fails; the endpoint is not blamed.

This module holds the engine: its settings, the model check and the health
probe, the request body, and the failover loop that drives each candidate's
attempts and counts their failures against the endpoints. Reading one
attempt's answer over HTTP, and telling those failures apart, is in
:mod:`nbest.engines._openai_read`; the wire format in
:mod:`nbest.engines._openai_wire`.

    >>> engine = OpenAIEngine(["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"], model="Qwen/Qwen2.5-7B-Instruct")
    >>> engine.name
    'Qwen2.5-7B-Instruct'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from nbest.engines._openai_read import ERROR_BODY_BYTES as ERROR_BODY_BYTES
from nbest.engines._openai_read import MALFORMED as MALFORMED
from nbest.engines._openai_read import (
    AnswerReading,
    ConnectionFailure,
    EndpointFailure,
    _Attempt,
    _Rejected,
    _response_limit,
)
from nbest.engines._openai_wire import TokenReader
from nbest.engines.base import Health
from nbest.engines.fleet import Endpoint, Fleet
from nbest.errors import ConfigError, EngineError, GenerationError
from nbest.types import CandidateUpdate, ChatMessage, Prompt, SamplingParams

__all__ = ["ConnectionFailure", "EndpointFailure", "OpenAIEngine"]

log = logging.getLogger("nbest.engines.openai")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses that send the request elsewhere (every 5xx does); each is a strike against the endpoint."""

MODELS_BYTES = 1_048_576
"""Most bytes of a ``GET /models`` answer."""

API_KEY = re.compile(r"[\x21-\x7e]{1,8192}")
"""What an ``api_key`` may be: visible ASCII, what an HTTP header carries unchanged
(no line breaks or spaces, which would break the header, and no other characters,
which httpx cannot encode), at most 8192 of them."""

EXTRA_BODY_BYTES = 1_048_576
"""Most bytes ``extra_body`` may take as JSON (it travels with every request)."""

NBEST_FIELDS = frozenset({
    "model", "n", "stream", "stream_options", "prompt", "messages", "logprobs", "top_logprobs", "max_tokens",
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty", "frequency_penalty",
    "repetition_penalty",
})  # fmt: skip
"""Request fields :meth:`OpenAIEngine.body` sets for each candidate, which ``extra_body`` may not
replace: every candidate would get the same sampling (defeating the strategy), or a body nbest
cannot read (``n`` above 1, a stream it did not ask for)."""


class OpenAIEngine(AnswerReading):
    """Generates candidates on OpenAI-compatible servers, balanced and failed over.

    Args:
        endpoints: base URLs (``http://host:8000/v1``; ``/v1`` is added to a
            bare host), or :class:`~nbest.engines.fleet.Endpoint` s with their
            own weight and cap, or dicts of their fields.
        model: the served model name; None uses the one model the servers
            serve (checked at :meth:`start`).
        name: the engine's name (default: the model's last path part).
        api_key: sent as a bearer token.
        chat: the servers offer ``/chat/completions``; False rejects chat
            prompts (completion-only servers, base models).
        request_timeout: seconds one candidate may take in all (its deadline);
            past it the candidate fails and no endpoint is blamed.
        read_timeout: longest wait for the next bytes of an answer (the
            headers, the next streamed token; it covers queueing and prefill);
            past it the endpoint counts as failed (a black hole).
        connect_timeout: seconds to connect, and to probe a down endpoint.
        stream: ask for streamed answers (the default). False: each answer
            comes in one piece, so ``read_timeout`` must cover a whole
            generation (a silent endpoint is then found only that late).
        max_attempts: endpoints one candidate is tried on before it fails.
        max_concurrency: default per-endpoint cap on requests in flight.
        max_strikes: wrong answers in a row that mark an endpoint down.
        backoff, max_backoff: probe delays of a down endpoint (exponential, jittered).
        down_timeout: how long a request waits when every endpoint is down
            before :class:`~nbest.errors.EngineDeadError`.
        extra_body: fields added to every request body.
        transport: an httpx transport (tests use ``httpx.MockTransport``).

    The health probe is an asyncio task running from :meth:`start` to
    :meth:`aclose` (the orchestrator calls both); use the asyncio backend, as
    for vLLM itself.

    Token updates (``token_updates = True``): ``generate(..., tokens=True)``
    yields a partial update per streamed chunk; see :meth:`generate`.

    Raises:
        ConfigError: a bad URL or setting.
    """

    token_updates = True
    """``generate`` takes ``tokens=True`` (see :func:`nbest.engines.base.streams_tokens`)."""

    def __init__(
        self,
        endpoints: Sequence[str | Endpoint | Mapping[str, Any]] | str,
        model: str | None = None,
        *,
        name: str | None = None,
        api_key: str | None = None,
        chat: bool = True,
        request_timeout: float = 600.0,
        read_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        stream: bool = True,
        max_attempts: int = 3,
        max_concurrency: int = 64,
        max_strikes: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        down_timeout: float = 10.0,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        eps: list[Endpoint] = []
        for item in endpoints:
            if isinstance(item, Endpoint):
                eps.append(item)
            elif isinstance(item, str):
                eps.append(Endpoint(item, max_concurrency=max_concurrency))
            else:
                eps.append(Endpoint(**{"max_concurrency": max_concurrency, **dict(item)}))
        timeouts = ((request_timeout, "request_timeout"), (read_timeout, "read_timeout"), (connect_timeout, "connect_timeout"))
        for value, label in timeouts:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{label}: must be a positive number of seconds", parameter=label, value=value)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError("max_attempts: must be an integer >= 1", parameter="max_attempts", value=max_attempts)
        self.model = model
        self.name = name or (model.rstrip("/").split("/")[-1] if model else "openai")
        self.fleet = Fleet(
            eps, backoff=backoff, max_backoff=max_backoff, down_timeout=down_timeout, max_strikes=max_strikes, name=self.name
        )
        self.api_key = _check_api_key(api_key)
        self.chat = chat
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.stream = stream
        self.max_attempts = max_attempts
        self.extra_body = _check_extra_body(extra_body)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._probe: asyncio.Task[None] | None = None
        self._attempts: dict[str, _Attempt] = {}
        self._closed = False

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints with their live state (in flight, sent, health)."""
        return self.fleet.endpoints

    def describe(self) -> dict[str, Any]:
        """What it runs with (:func:`nbest.engines.base.describe_engine`): the served model
        (None until :meth:`start` asked the servers, when none was given), the endpoint URLs
        (without any user:password in them), and whether it asks for chat and streaming.
        Never the API key, headers or ``extra_body``.

        >>> OpenAIEngine("http://10.0.0.1:8000", model="m", api_key="sk-secret").describe()
        {'kind': 'openai', 'model': 'm', 'endpoints': ['http://10.0.0.1:8000/v1'], 'chat': True, 'stream': True}
        """
        return {
            "kind": "openai",
            "model": self.model,
            "endpoints": [_without_credentials(e.url) for e in self.endpoints],
            "chat": self.chat,
            "stream": self.stream,
        }

    # -- lifecycle -----------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`aclose`."""
        return self._client is not None

    def health(self) -> Health:
        """Healthy while one endpoint is up; an all-down fleet heals itself (the probe), a closed one does not."""
        if self._closed:
            return Health(ok=False, detail=f"engine {self.name} is closed", restart=True)
        if not any(e.healthy for e in self.fleet.endpoints):
            return Health(ok=False, detail=f"every endpoint of {self.name} is down: {self.fleet.describe()}")
        return Health(ok=True)

    async def start(self) -> None:
        """Ask every endpoint what it serves, check the model, start the health probe.

        Unreachable endpoints start down (the probe brings them back).

        Raises:
            ConfigError: a server does not serve ``model`` (the message lists
                what it serves), or ``model`` is None and the servers do not
                serve exactly one model.
            EngineError: no endpoint answered.
        """
        if self._client is not None:
            return
        if self._closed:
            raise EngineError(f"engine {self.name} is closed", engine=self.name)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        total = sum(e.max_concurrency for e in self.endpoints)
        client = httpx.AsyncClient(
            transport=self._transport,
            headers=headers,
            timeout=httpx.Timeout(None, connect=self.connect_timeout),  # reads: read_timeout, bounded per wait in _exchange
            limits=httpx.Limits(max_connections=total + len(self.endpoints), max_keepalive_connections=total),
        )
        try:
            await self._check_models(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._probe = asyncio.create_task(self._probe_loop(), name=f"nbest-probe-{self.name}")

    async def _check_models(self, client: httpx.AsyncClient) -> None:
        served: dict[str, list[str]] = {}

        async def ask(endpoint: Endpoint) -> None:
            try:
                served[endpoint.url] = await self._models(client, endpoint)
            except EndpointFailure as exc:
                self.fleet.mark_down(endpoint, str(exc))

        async with anyio.create_task_group() as tg:
            for endpoint in self.endpoints:
                tg.start_soon(ask, endpoint)
        if not served:
            raise EngineError(f"engine {self.name}: no endpoint answered: {self.fleet.describe()}", engine=self.name)
        if self.model is None:
            names = {name for models in served.values() for name in models}
            if len(names) != 1:
                raise ConfigError(
                    f"model: the endpoints serve {sorted(names)}; name one with model=... (--model)", parameter="model"
                )
            self.model = names.pop()
            if self.name == "openai":
                self.name = self.fleet.name = self.model.rstrip("/").split("/")[-1]
        for url, models in served.items():
            if self.model not in models:
                raise ConfigError(
                    f"model: {url} does not serve {self.model!r}; it serves {', '.join(map(repr, models)) or 'nothing'}",
                    parameter="model",
                    value=self.model,
                )

    async def _models(self, client: httpx.AsyncClient, endpoint: Endpoint) -> list[str]:
        """The model ids ``endpoint`` serves (``GET /models``), asked within
        ``2 * connect_timeout`` in all and read up to ``MODELS_BYTES`` (a server
        that drips or floods cannot hold the probe)."""
        try:
            with anyio.fail_after(2 * self.connect_timeout):
                async with client.stream("GET", f"{endpoint.url}/models", timeout=self.connect_timeout) as response:
                    status = response.status_code
                    raw = await self._read(response, MODELS_BYTES)
        except TimeoutError as exc:
            raise EndpointFailure(f"GET /models: no answer within {2 * self.connect_timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise EndpointFailure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        text = raw.decode("utf-8", "replace")
        if status != 200:
            raise EndpointFailure(f"GET /models: HTTP {status}: {text[:200]}")
        try:
            models = [str(m["id"]) for m in json.loads(text)["data"]]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise EndpointFailure(f"GET /models: not an OpenAI model list: {text[:200]}") from exc
        endpoint.served = models
        return models

    async def _probe_loop(self) -> None:
        """Probe down endpoints when their backoff has passed; mark them up when they answer.

        Runs until :meth:`aclose`: an unexpected error is logged and the loop goes on.
        """
        while True:
            try:
                await anyio.sleep(min(self.fleet.next_due_in(1.0), 1.0))
                client = self._client
                if client is None:
                    return
                for endpoint in self.fleet.due():
                    await self._probe_one(client, endpoint)
            except Exception:
                log.exception("engine %s: the endpoint probe failed; probing goes on", self.name)
                await anyio.sleep(1.0)

    async def _probe_one(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        """Probe one down endpoint; any failure keeps it down (logged when unexpected)."""
        try:
            models = await self._models(client, endpoint)
        except EndpointFailure as exc:
            self.fleet.mark_down(endpoint, str(exc))
            return
        except Exception as exc:
            log.exception("engine %s: probing %s failed", self.name, endpoint.url)
            self.fleet.mark_down(endpoint, f"probe: {type(exc).__name__}: {exc}")
            return
        if self.model in models:
            self.fleet.mark_up(endpoint)
        else:
            self.fleet.mark_down(endpoint, f"no longer serves {self.model!r} (serves {models})")

    async def aclose(self) -> None:
        """Stop the probe and close every connection. Idempotent."""
        self._closed = True
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenAIEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests ------------------------------------------------------------

    def body(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        """The path (``/completions`` or ``/chat/completions``) and JSON body for one candidate.

        Raises:
            GenerationError: a chat prompt on an engine built with ``chat=False``.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "n": 1,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k != -1:
            body["top_k"] = params.top_k
        if params.min_p != 0.0:
            body["min_p"] = params.min_p
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if self.stream:
            body.update(stream=True, stream_options={"include_usage": True})
        if isinstance(prompt, str):
            body.update(prompt=prompt, logprobs=params.top_logprobs)
            path = "/completions"
        else:
            if not self.chat:
                raise GenerationError(f"engine {self.name} was built with chat=False; send a text prompt", engine=self.name)
            messages = [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in prompt]
            body.update(messages=messages, logprobs=True, top_logprobs=params.top_logprobs)
            path = "/chat/completions"
        body.update(self.extra_body)
        return path, body

    async def generate(
        self, prompt: Prompt, params: SamplingParams, request_id: str, *, tokens: bool = False
    ) -> AsyncGenerator[CandidateUpdate, None]:
        """Generate one candidate on the least loaded healthy endpoint; see
        :class:`~nbest.engines.base.Engine`.

        A failed attempt moves the request to another endpoint (one not tried
        yet when there is one); the candidate is reported once. See the module
        docstring for how each failure counts against its endpoint.

        ``tokens=True`` (with ``stream=True``, the default) yields a partial
        update for every streamed chunk that brings tokens: the text so far
        and the new tokens' log-probabilities (``new_token_logprobs``, and
        ``new_top_logprobs`` when ``params.top_logprobs`` > 0), then the same
        final update as without ``tokens``. Once a token has been yielded the
        request cannot move to another endpoint (it would start over and
        repeat tokens): a failure after that point is this candidate's
        :class:`~nbest.errors.GenerationError`, and the endpoint is still
        blamed as usual. :meth:`abort` closes the stream (vLLM then aborts the
        request) and the candidate ends with a final update whose
        ``finish_reason`` is ``"abort"`` and the text so far, as
        ``VLLMEngine``'s does. Without ``stream`` the answer comes whole:
        one final update holds every token in ``new_token_logprobs``.

        Raises:
            GenerationError: two endpoints refused the request (4xx; one when
                there is no other), it was aborted (without ``tokens``), it took
                longer than ``request_timeout``, it failed on ``max_attempts``
                endpoints, or (``tokens``) it failed after its first token.
            EngineDeadError: every endpoint stayed down for ``down_timeout`` s.
        """
        await self.start()
        path, body = self.body(prompt, params)
        # One failover loop for both ways of reading an answer, so a failure counts the
        # same whether the answer comes whole (_answer) or token by token (_events).
        streamed = tokens and self.stream
        limit = _response_limit(params)
        deadline = anyio.current_time() + self.request_timeout
        failures: list[str] = []
        tried: list[str] = []
        rejected: list[tuple[Endpoint, str]] = []  # 4xx answers: a strike once another endpoint serves the request
        final: CandidateUpdate | None = None
        yielded = False  # a partial update went out: no failover from here on (_no_failover)
        while final is None:
            if len(failures) >= self.max_attempts:
                raise GenerationError(f"failed on {len(failures)} attempt(s): {'; '.join(failures)}", engine=self.name)
            # a refused request waits for an endpoint that has not refused it, to tell whose fault it is
            async with self.fleet.acquire(avoid=tried, insist=bool(rejected)) as endpoint:
                attempt = _Attempt(endpoint, anyio.CancelScope())
                self._attempts[request_id] = attempt
                reader = TokenReader(path, params)
                url = f"{endpoint.url}{path}"
                if streamed:
                    answer = self._events(attempt, reader, url, body, deadline, limit)
                else:
                    answer = self._answer(attempt, reader, url, body, deadline, limit, every_token_new=tokens)
                try:
                    async with contextlib.aclosing(answer) as updates:
                        async for update in updates:
                            if update.finished:
                                final = update
                            else:
                                yielded = True
                                yield update  # no cancel scope is open here: the consumer runs (see _step)
                except ConnectionFailure as exc:
                    failures.append(f"{endpoint.url}: {exc}")
                    self._connection_failed(endpoint, str(exc))
                    self._no_failover(yielded, reader, endpoint, exc)
                except EndpointFailure as exc:
                    failures.append(f"{endpoint.url}: {exc}")
                    self._strike(endpoint, str(exc))
                    self._no_failover(yielded, reader, endpoint, exc)
                except _Rejected as exc:
                    failures.append(f"{endpoint.url}: {exc}")
                    rejected.append((endpoint, str(exc)))
                    if len(rejected) > 1 or not self._another([*tried, endpoint.url]):
                        raise GenerationError(f"{url}: {exc}", engine=self.name) from None
                finally:
                    self._attempts.pop(request_id, None)
                    if attempt.response is not None:
                        with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                            await attempt.response.aclose()  # unread: the connection closes, the server aborts
                if final is None and endpoint.url not in tried:
                    tried.append(endpoint.url)
            if attempt.aborted and not streamed:
                raise GenerationError(f"request {request_id} was aborted", engine=self.name)
            if final is None and attempt.aborted:
                final = self._aborted(reader)
            elif final is None and attempt.moved:  # its endpoint failed under another request: elsewhere, uncounted
                self._no_failover(yielded, reader, endpoint, ConnectionFailure("its endpoint failed under another request"))
        self.fleet.succeeded(endpoint)
        for other, error in rejected:
            if other is not endpoint:
                self._strike(other, error)
        yield final

    def _no_failover(self, yielded: bool, reader: TokenReader, endpoint: Endpoint, exc: Exception) -> None:
        """After a yielded update, a failed attempt fails the candidate (a retry would repeat tokens)."""
        if yielded:
            raise GenerationError(
                f"{endpoint.url} failed after {reader.tokens} streamed token(s), which a retry would repeat: {exc}",
                engine=self.name,
            ) from exc

    def _aborted(self, reader: TokenReader) -> CandidateUpdate:
        """The final update of an aborted token stream: what came so far."""
        return CandidateUpdate(
            text=reader.text,
            num_tokens=reader.tokens,
            cumulative_logprob=reader.cumulative_logprob,
            finish_reason="abort",
            finished=True,
            new_token_logprobs=[],
            new_top_logprobs=[] if reader.params.top_logprobs > 0 else None,
        )

    def _strike(self, endpoint: Endpoint, error: str) -> None:
        """Count a failed request on ``endpoint``; log when that marks it down."""
        if self.fleet.strike(endpoint, error):
            log.warning(
                "engine %s: %s marked down after %d failed requests: %s", self.name, endpoint.url, endpoint.strikes, error
            )

    def _another(self, tried: list[str]) -> bool:
        """True when a healthy endpoint not in ``tried`` exists."""
        return any(e.healthy and e.url not in tried for e in self.endpoints)

    def _connection_failed(self, endpoint: Endpoint, error: str) -> None:
        """Mark ``endpoint`` down and move its other requests to healthy endpoints."""
        if endpoint.healthy:
            log.warning("engine %s: %s is down: %s", self.name, endpoint.url, error)
        self.fleet.mark_down(endpoint, error)
        self.fleet.strike(endpoint, error)
        for attempt in self._attempts.values():
            if attempt.endpoint is endpoint and not attempt.scope.cancel_called:
                attempt.moved = True
                attempt.scope.cancel()

    async def abort(self, request_id: str) -> None:
        """Close the HTTP request of ``request_id`` (the server then aborts it); no-op when unknown.

        A token stream whose consumer is between updates (not waiting for
        bytes) has its response closed here, so the server stops at once even
        if the consumer never reads on.
        """
        attempt = self._attempts.get(request_id)
        if attempt is not None:
            attempt.aborted = True
            attempt.scope.cancel()
            response = attempt.response
            if response is not None and not attempt.reading:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                    await response.aclose()


def _without_credentials(url: str) -> str:
    """``url`` without the ``user:password@`` part of its host, if it has one.

    >>> _without_credentials("https://me:pw@10.0.0.1:8000/v1")
    'https://10.0.0.1:8000/v1'
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _check_api_key(api_key: str | None) -> str | None:
    """``api_key`` if a header can carry it ("" and None: no key); checked here
    because a bad key would otherwise fail every request, and the endpoints
    would be blamed for it.

    Raises:
        ConfigError: not a string, or not what :data:`API_KEY` allows (the key
            itself is left out of the error).
    """
    if api_key is None or api_key == "":
        return api_key
    if not isinstance(api_key, str) or not API_KEY.fullmatch(api_key):
        raise ConfigError(
            "api_key: must be at most 8192 visible ASCII characters (no spaces, line breaks or other characters)",
            parameter="api_key",
        )
    return api_key


def _check_extra_body(extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra_body`` as a dict, once it is known to encode as the JSON of every
    request (as httpx encodes it: no NaN or infinity), within ``EXTRA_BODY_BYTES``;
    checked here because a bad value would otherwise fail every candidate.

    Raises:
        ConfigError: not a mapping, a field nbest sets (:data:`NBEST_FIELDS`), not JSON
            (a set, an object, NaN, nested too deep), or too long.
    """
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping):
        raise ConfigError(
            f"extra_body: must be a mapping of request fields, not {type(extra_body).__name__}", parameter="extra_body"
        )
    body = dict(extra_body)
    taken = sorted(str(key) for key in body if key in NBEST_FIELDS)
    if taken:
        raise ConfigError(
            f"extra_body: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by nbest for each candidate "
            "(from the engine's model, the candidate's SamplingParams and prompt); extra_body adds other request "
            "fields (e.g. ignore_eos)",
            parameter="extra_body",
            value=taken,
        )
    try:
        size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(
            "extra_body: must be JSON (objects, lists, strings, finite numbers, true/false/null): "
            f"{type(exc).__name__}: {str(exc)[:200]}",
            parameter="extra_body",
        ) from None
    if size > EXTRA_BODY_BYTES:
        raise ConfigError(f"extra_body: {size} bytes as JSON; at most {EXTRA_BODY_BYTES} are allowed", parameter="extra_body")
    return body
