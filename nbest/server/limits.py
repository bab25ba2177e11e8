"""The server's bounds on one request, all checked before any work starts.

:func:`check_request` reads the request as sent (``n``, prompt size, ``max_tokens``,
``top_logprobs``); :func:`check_plan` reads the plan the strategy made of it (each
candidate's rendered prompt, its sampling settings, their sum) and the budget of
expensive rerankers a client asked for. Every refusal is a 422 naming the field and
the limit. Planning itself is cheap and bounded: strategies cap their own size
(:mod:`nbest.strategies.base`) and a prompt variant is measured before it is built
(:func:`~nbest.strategies.base.rendered_limit`).
"""

from __future__ import annotations

from collections.abc import Sequence

from nbest.rerankers.ranker import Ranker
from nbest.server.errors import ApiError
from nbest.server.settings import ServerSettings
from nbest.types import CandidateSpec, Prompt, Request, Result, SamplingParams

__all__ = [
    "check_plan",
    "check_request",
    "check_rerank_budget",
    "expensive_kinds",
    "prompt_chars",
    "rerank_deadline",
    "result_bytes",
]


def prompt_chars(request: Request, prompt: Prompt | None = None) -> int:
    """Every character a candidate's prompt carries: the prompt (or ``prompt``, a
    variant's), the system prompt unless the prompt has its own, and ``source``.

    >>> prompt_chars(Request(prompt="Hello", system="Be brief.", source="Bonjour"))
    21
    """
    prompt = request.prompt if prompt is None else prompt
    if isinstance(prompt, str):
        chars = len(prompt) + len(request.system or "")
    else:
        chars = sum(len(m.content) for m in prompt)
        if not any(m.role == "system" for m in prompt):
            chars += len(request.system or "")
    return chars + len(request.source or "")


def _params(settings: ServerSettings, params: SamplingParams, p: str, where: str = "") -> None:
    if params.max_tokens > settings.max_tokens:
        raise ApiError(
            422,
            f"{p}max_tokens: at most {settings.max_tokens} tokens per candidate (got {params.max_tokens}{where})",
            param=f"{p}max_tokens",
        )
    if params.top_logprobs > settings.max_top_logprobs:
        raise ApiError(
            422,
            f"{p}top_logprobs: at most {settings.max_top_logprobs} (got {params.top_logprobs}{where})",
            param=f"{p}top_logprobs",
        )


def check_request(settings: ServerSettings, request: Request, prefix: str = "") -> None:
    """The limits a request can be held to as sent (``n`` is checked by the caller).

    Raises:
        ApiError: 422 naming the field and the limit.
    """
    p = f"{prefix}." if prefix else ""
    chars = prompt_chars(request)
    if chars > settings.max_prompt_chars:
        raise ApiError(
            422,
            f"{p}prompt: at most {settings.max_prompt_chars} characters, system prompt and source included (got {chars})",
            param=f"{p}prompt",
        )
    _params(settings, request.params, p)
    total = request.n * request.params.max_tokens
    if total > settings.max_total_tokens:
        raise ApiError(
            422,
            f"{p}max_tokens: n × max_tokens at most {settings.max_total_tokens} (got {request.n} × "
            f"{request.params.max_tokens} = {total})",
            param=f"{p}max_tokens",
        )


def expensive_kinds(settings: ServerSettings, ranker: Ranker | None) -> list[str]:
    """The kinds among a client's rerankers that the rerank budget applies to."""
    if ranker is None or ranker.configs is None:
        return []
    kinds = [getattr(config, "registry_kind", "") for config in ranker.configs]
    return [kind for kind in kinds if kind in settings.expensive_rerankers]


def check_plan(
    settings: ServerSettings,
    request: Request,
    specs: Sequence[CandidateSpec],
    client_ranker: Ranker | None = None,
    prefix: str = "",
) -> None:
    """The limits a plan is held to: each candidate's rendered prompt and sampling
    settings, their token sum, and the budget of the expensive rerankers a client chose.

    Raises:
        ApiError: 422 naming the field and the limit.
    """
    p = f"{prefix}." if prefix else ""
    total = 0
    for spec in specs:
        where = f" for candidate {spec.index}"
        chars = prompt_chars(request, spec.prompt)
        if chars > settings.max_prompt_chars:
            raise ApiError(
                422,
                f"{p}prompt: at most {settings.max_prompt_chars} characters per candidate, prompt variants, "
                f"system prompt and source included (got {chars}{where})",
                param=f"{p}prompt",
            )
        _params(settings, spec.params, p, where)
        total += spec.params.max_tokens
    if total > settings.max_total_tokens:
        raise ApiError(
            422,
            f"{p}max_tokens: at most {settings.max_total_tokens} tokens over all candidates (the plan asks {total})",
            param=f"{p}max_tokens",
        )
    kinds = expensive_kinds(settings, client_ranker)
    if kinds:
        check_rerank_budget(settings, ", ".join(sorted(set(kinds))), len(specs), total, prefix)


def check_rerank_budget(settings: ServerSettings, kind: str, n: int, tokens: int, prefix: str = "") -> None:
    """A client's expensive reranker (``kind``) over ``n`` candidates of ``tokens`` tokens in all.

    Raises:
        ApiError: 422 over ``max_rerank_n`` or ``max_rerank_tokens``.
    """
    p = f"{prefix}." if prefix else ""
    if n > settings.max_rerank_n:
        raise ApiError(422, f"{p}n: at most {settings.max_rerank_n} candidates with reranker {kind} (got {n})", param=f"{p}n")
    if tokens > settings.max_rerank_tokens:
        raise ApiError(
            422,
            f"{p}max_tokens: at most {settings.max_rerank_tokens} tokens over all candidates (n × max_tokens) with "
            f"reranker {kind} (got {tokens})",
            param=f"{p}max_tokens",
        )


def rerank_deadline(settings: ServerSettings, timeout: float | None, generate_s: float) -> float:
    """Seconds reranking may take: what is left of the request's deadline (at least
    one second, so cheap rerankers still run), else ``rerank_timeout_s``."""
    if timeout is None:
        return settings.rerank_timeout_s
    return max(timeout - generate_s, 1.0)


def result_bytes(result: Result) -> int:
    """An upper estimate of the memory a kept Result takes, without serialising it.

    >>> result_bytes(Result(id="r", prompt="Hi", n=0, candidates=[], best=None)) > 0
    True
    """
    prompt = result.prompt
    size = 1024 + 4 * (len(prompt) if isinstance(prompt, str) else sum(len(m.content) for m in prompt))
    for c in [*result.candidates, *([result.best] if result.best is not None else [])]:
        size += 1024 + 4 * len(c.text) + 4 * len(c.error or "")
        size += 32 * len(c.token_logprobs or ())
        size += sum(64 + 48 * len(top) for top in c.top_logprobs or ())
    return size
