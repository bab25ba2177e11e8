"""OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

The usual fields (``n``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``,
``stop``, ``logprobs``, ``stream``) mean what they mean to OpenAI; the sampling
ones become :class:`~nbest.types.SamplingParams` fields through one table,
:data:`OPENAI_SAMPLING`. As with vLLM's OpenAI server, the other sampling
settings (``top_k``, ``min_p``, ``repetition_penalty``, ...) may be given as
extra body fields under their SamplingParams names. The extra
body field ``nbest`` picks the strategy and rerankers and what comes back:
``"return": "all"`` (the default) gives every successful candidate as a choice,
best first; ``"return": "best"`` gives only the top-ranked one (best-of-N as a
drop-in). Every choice carries ``nbest``: its rank, score, confidence, each
reranker's score and the spec that made it.

``nbest`` also takes ``until``/``wave`` (adaptive sampling) and ``prune`` (online
pruning), as the native body does. The choices are the complete candidates,
ranked: a pruned candidate (stopped early, its text partial) is not a choice, nor
is a candidate the stopping rule never generated, so an answer may hold fewer
than ``n`` choices. ``usage`` counts every token generated, pruned candidates'
and those of a cancelled wave included; the reply's ``nbest`` lists the pruned
candidates and ``samples_used``.

When streaming, each candidate's text arrives as one chunk when it finishes
(choice ``index`` = the candidate's index), then a last chunk per choice with
its ``finish_reason`` and ``nbest`` ranking, then ``[DONE]``. A pruned candidate
sends no chunk. With ``until`` the text chunks come after sampling stopped (an
OpenAI client cannot take back a choice it was sent, and a candidate of a wave
the rule cancelled does not count).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from fastapi import APIRouter
from pydantic import ConfigDict, Field, create_model
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from nbest.errors import ConfigError, EngineDeadError, NbestError
from nbest.server.errors import ApiError, error_body, from_config_error
from nbest.server.service import Adaptive, Options, Service, read_json, until_disconnect
from nbest.server.sse import EventStream, format_event
from nbest.types import Candidate, ChatMessage, NbestModel, Request, Result, SamplingParams

__all__ = ["OPENAI_SAMPLING", "ChatBody", "CompletionBody", "NbestOptions", "router"]

router = APIRouter()


class NbestOptions(Options):
    """The ``nbest`` extra field of an OpenAI-style body."""

    model_config = ConfigDict(populate_by_name=True)

    return_: Literal["best", "all"] = Field(default="all", alias="return")
    """``all``: every candidate as a choice, best first; ``best``: only the top one."""


OPENAI_SAMPLING: dict[str, dict[str, str]] = {
    "common": {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "seed": "seed",
        "stop": "stop",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
    },
    "chat": {"max_completion_tokens": "max_tokens", "top_logprobs": "top_logprobs"},  # max_completion_tokens wins
    "completion": {"logprobs": "top_logprobs"},  # an int here; chat's "logprobs" is a bool (return them or not)
}
"""OpenAI body field -> :class:`~nbest.types.SamplingParams` field: those of
both routes, then those of one. Every SamplingParams field that no OpenAI
field maps to (:data:`VLLM_EXTRAS`) is accepted under its own name, as vLLM's
OpenAI server accepts it."""

VLLM_EXTRAS = tuple(
    name
    for name in SamplingParams.model_fields
    if name not in {field for table in OPENAI_SAMPLING.values() for field in table.values()}
)
"""SamplingParams fields taken as extra body fields under their own names (``top_k``, ``min_p`` ...)."""

if TYPE_CHECKING:
    _VllmExtras = NbestModel
else:
    _VllmExtras = create_model(
        "VllmExtras",
        __base__=NbestModel,
        **{
            name: (field.annotation | None, Field(default=None, description=field.description))
            for name, field in SamplingParams.model_fields.items()
            if name in VLLM_EXTRAS
        },
    )


class _Common(_VllmExtras):
    SAMPLING: ClassVar[dict[str, str]] = {**OPENAI_SAMPLING["common"], **{name: name for name in VLLM_EXTRAS}}
    """This route's body field -> SamplingParams field."""

    model: str | None = None
    """The served model's id (see ``/v1/models``)."""
    n: int = Field(default=1, ge=1)
    """How many candidates to generate."""
    # the sampling fields: SamplingParams checks them (sampling()), but for OpenAI's own range of temperature
    temperature: float | None = Field(default=None, le=2.0)
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = Field(default=None, max_length=200)
    """Who asks: kept as the request's metadata ``user`` (``nbest serve --learn-scope user`` ranks by it)."""
    nbest: NbestOptions = Field(default_factory=NbestOptions)
    """nbest's own options: strategy, rerankers, timeout, until, wave, prune, return."""

    def metadata(self) -> dict[str, Any]:
        """The request's metadata: the body's ``user``, when given."""
        return {} if self.user is None else {"user": self.user}

    def sampling(self) -> SamplingParams:
        """The body's sampling fields (see :data:`OPENAI_SAMPLING`) as SamplingParams.

        Raises:
            ConfigError: a bad value, named by its body field.
        """
        given: dict[str, Any] = {}
        source: dict[str, str] = {}
        for name, field in self.SAMPLING.items():
            value = getattr(self, name)
            if value is None:
                continue
            if field in given:  # max_tokens and max_completion_tokens: the later wins, both must be valid
                _sampling_params({field: given[field]}, source)
            given[field], source[field] = value, name
        return _sampling_params(given, source)


def _sampling_params(given: dict[str, Any], source: dict[str, str]) -> SamplingParams:
    """``SamplingParams(**given)``; a bad value is named by its body field (``source``)."""
    try:
        return SamplingParams(**given)
    except ConfigError as exc:
        field = str(exc.parameter)
        name = source.get(field, field)
        if name == field:
            raise
        raise ConfigError(name + str(exc).removeprefix(field), parameter=name, value=exc.value) from None


class ChatBody(_Common):
    """``POST /v1/chat/completions``."""

    SAMPLING: ClassVar[dict[str, str]] = {**_Common.SAMPLING, **OPENAI_SAMPLING["chat"]}

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    """Return each token's log-probability (and ``top_logprobs`` alternatives)."""
    top_logprobs: int | None = None

    def request(self) -> Request:
        return Request(prompt=self.messages, n=self.n, params=self.sampling(), chat=True, metadata=self.metadata())


class CompletionBody(_Common):
    """``POST /v1/completions``."""

    SAMPLING: ClassVar[dict[str, str]] = {**_Common.SAMPLING, **OPENAI_SAMPLING["completion"]}

    prompt: str | list[str]
    logprobs: int | None = None
    """Return each token's log-probability and this many alternatives."""
    echo: bool = False

    def request(self) -> Request:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ConfigError(f"prompt: give one prompt per request (got {len(prompt)})", parameter="prompt")
            prompt = prompt[0]
        if self.echo:
            raise ConfigError("echo: not supported", parameter="echo", value=True)
        return Request(prompt=prompt, n=self.n, params=self.sampling(), chat=False, metadata=self.metadata())


@router.get("/v1/models", summary="The served model")
async def models(http: HttpRequest) -> dict[str, Any]:
    service: Service = http.app.state.service
    return {
        "object": "list",
        "data": [{"id": service.settings.model_name, "object": "model", "created": int(service.started), "owned_by": "nbest"}],
    }


def _nbest_meta(c: Candidate) -> dict[str, Any]:
    return {
        "index": c.index,
        "rank": c.rank,
        "score": c.score,
        "confidence": c.confidence,
        "scores": c.scores,
        "spec": c.spec.model_dump(mode="json"),
        "num_tokens": c.num_tokens,
    }


def _chat_logprobs(c: Candidate) -> dict[str, Any] | None:
    if c.token_logprobs is None:
        return None
    tops = c.top_logprobs or []
    content = []
    for i, lp in enumerate(c.token_logprobs):
        alternatives = tops[i] if i < len(tops) else {}
        token = min(alternatives, key=lambda t: abs(alternatives[t] - lp), default="")
        content.append(
            {
                "token": token,
                "logprob": lp,
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alternatives.items()],
            }
        )
    return {"content": content}


def _completion_logprobs(c: Candidate) -> dict[str, Any] | None:
    if c.token_logprobs is None:
        return None
    tops = c.top_logprobs or []
    tokens = [
        min(t, key=lambda k: abs(t[k] - lp), default="") if t else "" for t, lp in zip(tops, c.token_logprobs, strict=False)
    ]
    tokens += [""] * (len(c.token_logprobs) - len(tokens))
    return {"tokens": tokens, "token_logprobs": c.token_logprobs, "top_logprobs": tops or None, "text_offset": None}


def _choices(result: Result, body: ChatBody | CompletionBody) -> list[Candidate]:
    ok = [c for c in result.candidates if c.complete]  # a pruned text is partial: not a choice
    if not ok:
        first = result.candidates[0].error if result.candidates else "no candidates"
        raise ApiError(502, f"all {len(result.candidates)} candidates failed; first error: {first}")
    return ok[:1] if body.nbest.return_ == "best" else ok


def _choice(position: int, c: Candidate, body: ChatBody | CompletionBody, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": position, "finish_reason": c.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": c.text}
        choice["logprobs"] = _chat_logprobs(c) if isinstance(body, ChatBody) and body.logprobs else None
    else:
        choice["text"] = c.text
        choice["logprobs"] = _completion_logprobs(c) if isinstance(body, CompletionBody) and body.logprobs is not None else None
    choice["nbest"] = _nbest_meta(c)
    return choice


def _envelope(kind: str, model: str, created: int, ident: str) -> dict[str, Any]:
    return {"id": ident, "object": kind, "created": created, "model": model}


def _usage(result: Result) -> dict[str, int]:
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _result_meta(result: Result) -> dict[str, Any]:
    return {
        "id": result.id,
        "answers": [a.model_dump() for a in result.answers],
        "warnings": result.warnings,
        "failed": [{"index": c.index, "error": c.error} for c in result.failed],
        "pruned": [{"index": c.index, "num_tokens": c.num_tokens, "signals": c.signals} for c in result.candidates if c.pruned],
        "samples_used": result.samples_used,
    }


async def _serve(http: HttpRequest, chat: bool) -> Response | EventStream:
    service: Service = http.app.state.service
    data = read_json(await http.body())
    try:
        body: ChatBody | CompletionBody = ChatBody.parse(data) if chat else CompletionBody.parse(data)
        request = body.request()
    except ConfigError as exc:
        raise from_config_error(exc) from None
    model = service.settings.model_name
    if body.model is not None and body.model != model:
        raise ApiError(404, f"model: {body.model!r} is not served here; use {model!r} (see /v1/models)", param="model")
    service.check(request)
    adaptive = body.nbest.adaptive(request.n, "nbest", defaults=service.settings)
    request = service.issue_id(request)
    strategy = await service.strategy(body.nbest.strategy, "nbest.strategy")
    ranker = service.ranker(body.nbest.rerankers, "nbest.rerankers", request=request)
    request, _ = await service.plan(request, strategy, ranker, prune=adaptive.prune, prune_field="nbest.prune")
    prefix = "chatcmpl-" if chat else "cmpl-"
    ident, created = prefix + uuid.uuid4().hex[:24], int(time.time())
    options = Options(timeout=body.nbest.timeout)
    if not body.stream:
        started = time.perf_counter()

        async def generate() -> list[Candidate]:
            return [c async for c in service.stream(request, options, strategy, adaptive.prune)]

        async def rank(candidates: list[Candidate]) -> Result:
            return await service.finish(request, candidates, ranker, time.perf_counter() - started, timeout=options.timeout)

        if adaptive.until is None:
            candidates = await until_disconnect(http, generate)
            # reranking stops too when the client goes away
            result = None if candidates is None else await until_disconnect(http, lambda: rank(candidates))
        else:  # waves, each ranked: generating and ranking are one piece of work
            result = await until_disconnect(http, lambda: service.generate(request, options, adaptive, strategy, ranker))
        if result is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        reply = _envelope("chat.completion" if chat else "text_completion", model, created, ident)
        reply["choices"] = [_choice(i, c, body, chat) for i, c in enumerate(_choices(result, body))]
        reply["usage"] = _usage(result)
        reply["nbest"] = _result_meta(result)
        return JSONResponse(reply)
    return EventStream(_stream(service, request, options, adaptive, strategy, ranker, body, chat, ident, created))


async def _stream(
    service: Service,
    request: Request,
    options: Options,
    adaptive: Adaptive,
    strategy: Any,
    ranker: Any,
    body: ChatBody | CompletionBody,
    chat: bool,
    ident: str,
    created: int,
) -> AsyncIterator[bytes]:
    envelope = _envelope("chat.completion.chunk" if chat else "text_completion", service.settings.model_name, created, ident)

    def chunk(index: int, text: str | None, finish: str | None, extra: dict[str, Any] | None = None) -> bytes:
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = {} if text is None else {"role": "assistant", "content": text}
        else:
            choice["text"] = text or ""
        choice.update(extra or {})
        return format_event({**envelope, "choices": [choice]})

    best_only = body.nbest.return_ == "best"
    early = not best_only and adaptive.until is None  # text as each candidate finishes: it will count
    try:
        result: Result | None = None
        async with contextlib.aclosing(service.events(request, options, adaptive, strategy, ranker)) as events:
            async for event in events:
                if isinstance(event, Result):
                    result = event
                elif early and event.complete:
                    yield chunk(event.index, event.text, None)
        assert result is not None  # events ends with the Result or raises
        for position, c in enumerate(_choices(result, body)):
            index = 0 if best_only else c.index
            if not early:
                yield chunk(index, c.text, None)
            yield chunk(index, None, c.finish_reason, {"nbest": _nbest_meta(c), "rank_position": position})
        if (body.stream_options or {}).get("include_usage"):
            yield format_event({**envelope, "choices": [], "usage": _usage(result), "nbest": _result_meta(result)})
    except ApiError as exc:
        yield format_event(error_body(exc.status, exc.message, exc.param))
    except EngineDeadError as exc:
        service.engine_failed()
        yield format_event(error_body(503, str(exc)))
    except NbestError as exc:
        yield format_event(error_body(502, str(exc)))
    yield format_event("[DONE]")


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completions with N ranked candidates", response_model=None)
async def chat_completions(http: HttpRequest) -> Response | EventStream:
    return await _serve(http, chat=True)


@router.post("/v1/completions", summary="OpenAI-compatible text completions with N ranked candidates", response_model=None)
async def completions(http: HttpRequest) -> Response | EventStream:
    return await _serve(http, chat=False)
