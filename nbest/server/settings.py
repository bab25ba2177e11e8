"""Limits and options of the HTTP server, as one validated model.

The CLI (``nbest serve``) builds it from flags and environment variables; the
app itself never reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from nbest.types import DEFAULT_MAX_N, NbestModel

__all__ = ["ServerSettings"]


class ServerSettings(NbestModel):
    """What the server accepts and how much work it takes on at once."""

    model_name: str = "nbest"
    """The model id reported by ``/v1/models`` and in OpenAI responses."""
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    """Largest request body accepted (413 beyond)."""
    max_n: int = Field(default=DEFAULT_MAX_N, ge=1)
    """Largest ``n`` (candidates per prompt) accepted."""
    max_prompt_chars: int = Field(default=32_000, ge=1)
    """Longest prompt accepted, in characters: every text a request carries (chat messages,
    system prompt, ``source``), measured on each candidate's rendered prompt (prompt variants)."""
    max_tokens: int = Field(default=4096, ge=1)
    """Largest ``max_tokens`` of one candidate."""
    max_total_tokens: int = Field(default=65_536, ge=1)
    """Largest ``max_tokens`` summed over a request's candidates (``n × max_tokens``)."""
    max_top_logprobs: int = Field(default=5, ge=0, le=20)
    """Largest ``top_logprobs`` (alternatives kept per generated token)."""
    expensive_rerankers: tuple[str, ...] = ("mbr", "embed", "source", "cross", "reward", "judge")
    """Reranker kinds whose cost grows with the candidates' number and length (pairwise
    utilities, model forward passes); a client asking for one is held to the budget below."""
    max_rerank_n: int = Field(default=16, ge=1)
    """Largest ``n`` when a client asks for an expensive reranker."""
    max_rerank_tokens: int = Field(default=16_384, ge=1)
    """Largest ``n × max_tokens`` (the candidates' text) when a client asks for an expensive reranker."""
    rerank_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds reranking may take when the request has no deadline of its own; a reranker
    still running then is stopped and counts as failed (the others rank)."""
    max_concurrent: int = Field(default=16, ge=1)
    """Most generation requests served at once; more get 429 with Retry-After."""
    retry_after_s: int = Field(default=1, ge=1)
    """The Retry-After given with a 429."""
    allowed_hosts: tuple[str, ...] | None = None
    """Names a client may reach the server by (its ``Host`` header; a ``.example.com`` entry
    also allows subdomains, ``*`` allows any): a request for another host is 421, which
    defeats DNS rebinding. A browser POST whose ``Origin`` is neither this server nor an
    allowed host is 403. None: any host (``nbest serve`` derives the list from ``--host``)."""
    api_key: str | None = None
    """When set, every route but ``/healthz`` needs ``Authorization: Bearer KEY`` (or ``X-API-Key``)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-request deadline for generation (None: the orchestrator's)."""
    rerankers_allowed: tuple[str, ...] | None = None
    """Reranker kinds callers may choose, to narrow what is offered; None: every kind whose
    config is safe for clients (``RerankerConfig.safe_for_clients``: no model names, no
    client regular expressions, no judge)."""
    preferences: Path | None = None
    """The preference database; None: ``$NBEST_HOME/preferences.db``."""
    remember_results: int = Field(default=1024, ge=0)
    """How many recent Results the server keeps so a choice can name one by id."""
    remember_bytes: int = Field(default=64_000_000, ge=0)
    """Most bytes (estimated from texts and log-probabilities) the kept Results take; the oldest go first."""
    learn: bool = False
    """Refit the ranker from the preference log while serving (in the background) and rank with
    the latest accepted version (see :mod:`nbest.server.ranker_api`)."""
    learn_every: int = Field(default=10, ge=1)
    """Refit a scope once this many new choices were logged in it since its last refit."""
    learn_min: int = Field(default=20, ge=2)
    """Choices a scope needs before its first refit takes effect (fewer: the wider scope ranks)."""
    learn_interval_s: float = Field(default=300.0, ge=0)
    """Seconds between timer refits of scopes with new choices (0: only every ``learn_every`` choices)."""
    learn_scope: Literal["global", "task", "user"] = "global"
    """What a ranker is learned for: every request, each ``metadata["task"]``, or each
    ``metadata["user"]``; a task or user with too few choices is ranked by the wider scope."""
    learn_gap_s: float = Field(default=2.0, ge=0)
    """Fewest seconds between two refits, however fast choices arrive."""
