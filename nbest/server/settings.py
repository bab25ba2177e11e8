"""Limits and options of the HTTP server, as one validated model.

The CLI (``nbest serve``) builds it from flags and environment variables; the
app itself never reads the environment.

Adaptive sampling and pruning (``until``, ``wave``, ``prune``) may be set here for
every generation request: a request that leaves one out gets the server's, one that
sets it wins, and one that sets it to null turns it off
(:meth:`Options.adaptive <nbest.server.service.Options.adaptive>` applies them).
They are checked here with the parsers of ``--until`` and ``--prune``, so a bad
default fails when the settings are made, not on the first request.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from nbest.engines.base import streams_tokens
from nbest.errors import ConfigError
from nbest.orchestrator.pruning import PRUNE_TOP_LOGPROBS, Prune, parse_prune
from nbest.orchestrator.stopping import MAX_RULE_CHARS, StoppingRule, parse_rule
from nbest.types import DEFAULT_MAX_N, NbestModel

__all__ = ["MAX_RULE_CHARS", "ServerDefaults", "ServerSettings", "parse_until"]


def parse_until(text: str) -> StoppingRule:
    """A stopping rule from its short form (:func:`~nbest.orchestrator.stopping.parse_rule`),
    its error naming the field ``until`` rather than the ``--until`` flag: what an HTTP body
    and these settings report.

    >>> parse_until("esc:4")
    ESC(window=4)
    >>> parse_until("forever")
    Traceback (most recent call last):
    nbest.errors.ConfigError: until 'forever': unknown stopping rule 'forever'; use beta:P, dirichlet:P, confidence:P or esc:W

    Raises:
        ConfigError: an unknown rule or a bad threshold (``parameter="until"``).
    """
    return parse_rule(text, name="until")


class ServerDefaults(NbestModel):
    """What a generation request gets when it leaves ``until``, ``wave`` or ``prune`` out
    (``GET /v1/settings``): the server's own, as ``nbest serve --until/--wave/--prune``
    set them. A client reads them to know what it will get, or what to turn off with null."""

    until: str | None = None
    """The stopping rule's short form (``beta:0.95``); None: all ``n`` at once."""
    wave: int | None = None
    """Candidates per wave with that rule; None: 4, or the ``esc`` window (and None without a rule)."""
    prune: str | None = None
    """The pruning policy's short form (``0.9``, ``low:8``); None: no pruning."""


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
    until: str | None = Field(default=None, max_length=MAX_RULE_CHARS)
    """The stopping rule of every generation request that does not set ``until`` itself, as
    ``--until`` takes it (``beta:0.95``, ``dirichlet:0.9:weighted``, ``confidence:0.8``,
    ``esc:4``): each such request is generated in waves and stops once the rule holds.
    None: all ``n`` at once unless the request asks for a rule."""
    wave: int | None = Field(default=None, ge=1)
    """Candidates per wave with the server's ``until``, at most ``max_n`` (a request of fewer
    candidates is one wave); None: 4, or the ``esc`` window. It goes with the server's rule:
    a request that sets ``until`` itself (a rule, or null) does not get it."""
    prune: str | None = Field(default=None, max_length=MAX_RULE_CHARS)
    """Online pruning of every generation request that does not set ``prune`` itself, as
    ``--prune`` takes it (``KEEP[:WARMUP[:WINDOW]]``: ``0.9``, ``low:8``): every engine must
    stream tokens (:meth:`check_engines`) and ``max_top_logprobs`` must allow the 5
    alternatives per token pruning reads. None: no pruning unless the request asks."""

    @model_validator(mode="after")
    def _check_adaptive(self) -> Self:
        """The defaults parse and fit together, so that every request can use them."""
        rule = self.stopping_rule()
        self.prune_policy()
        if self.wave is not None:
            if rule is None:
                raise ConfigError(
                    "wave: only used with a stopping rule (until, e.g. beta:0.95)", parameter="wave", value=self.wave
                )
            if self.wave > self.max_n:
                raise ConfigError(
                    f"wave: at most max_n = {self.max_n} candidates per wave (got {self.wave})", parameter="wave", value=self.wave
                )
        if self.prune is not None and self.max_top_logprobs < PRUNE_TOP_LOGPROBS:
            raise ConfigError(
                f"prune: pruning reads {PRUNE_TOP_LOGPROBS} alternatives per token, and max_top_logprobs is "
                f"{self.max_top_logprobs}: raise it to at least {PRUNE_TOP_LOGPROBS}, or leave prune out",
                parameter="prune",
                value=self.prune,
            )
        return self

    def defaults(self) -> ServerDefaults:
        """The request defaults these settings give (``until``, ``wave``, ``prune``, as given).

        >>> ServerSettings(until="esc:4", prune="low").defaults()
        ServerDefaults(until='esc:4', wave=None, prune='low')
        """
        return ServerDefaults(until=self.until, wave=self.wave, prune=self.prune)

    def stopping_rule(self) -> StoppingRule | None:
        """``until`` parsed (None: no default rule).

        Raises:
            ConfigError: naming ``until`` and the rules allowed.
        """
        return None if self.until is None else parse_until(self.until)

    def prune_policy(self) -> Prune | None:
        """``prune`` parsed (None: no default pruning).

        Raises:
            ConfigError: naming ``prune`` (or ``prune.keep`` ...) and the form allowed.
        """
        return None if self.prune is None else parse_prune(self.prune)

    def check_engines(self, engines: Mapping[str, object]) -> None:
        """Refuse engines the defaults cannot run on, before the server starts: with
        ``prune``, every route must stream tokens (a request's plan may use any of them,
        and it is pruned unless it says ``"prune": null``).

        Raises:
            ConfigError: naming ``prune``, the route and why.
        """
        if self.prune is None:
            return
        for route, engine in engines.items():
            if not streams_tokens(engine):
                raise ConfigError(
                    f"prune: route {route!r} (engine {getattr(engine, 'name', '?')!r}, {type(engine).__name__}) cannot "
                    "report tokens as they are generated; pruning needs an engine with token updates "
                    "(VLLMEngine, OpenAIEngine)",
                    parameter="prune",
                    value=route,
                )
