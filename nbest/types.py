"""Pydantic models shared by every part of nbest.

The flow, in types: a :class:`Request` is planned by a strategy into
:class:`CandidateSpec` s; engines stream :class:`CandidateUpdate` s back; the
orchestrator turns them into :class:`Candidate` s; rerankers give each a
:class:`Score`; the :class:`Result` lists them ranked, with :class:`Answer` s.

Every model rejects unknown fields and raises :class:`~nbest.errors.ConfigError`
(a ``ValueError``) naming the field and what is allowed::

    >>> SamplingParams(top_p=0)
    Traceback (most recent call last):
    nbest.errors.ConfigError: top_p: Input should be greater than 0 (got 0)
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nbest.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_N",
    "Answer",
    "Candidate",
    "CandidateSpec",
    "CandidateUpdate",
    "ChatMessage",
    "Diversity",
    "NbestModel",
    "Prompt",
    "Request",
    "Result",
    "SamplingParams",
    "Score",
    "Timings",
    "Usage",
    "config_error",
]

DEFAULT_MAX_N = 64
"""The default cap on ``n`` (candidates per prompt); orchestrators take their own."""

MIN_TEMPERATURE = 0.01
"""The smallest non-zero temperature. vLLM clamps smaller ones up with only a
log line; nbest rejects them instead (use 0 for greedy decoding)."""


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a hostile value is not echoed whole).

    >>> _shown("x" * 10_000)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (10002 characters)"
    """
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown)} characters)"


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's ``ValidationError`` into one readable ``ConfigError``.

    The message names the first offending field, says what is allowed and what
    was given; the other problems, if any, are counted.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, ConfigError):  # raised by a nested NbestModel.__init__
        if loc and inner.parameter:
            return ConfigError(f"{loc}.{inner}", parameter=f"{loc}.{inner.parameter}", value=inner.value)
        return inner
    msg = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    given = first.get("input")
    text = f"{loc}: {msg}" if loc else msg
    if loc and first["type"] not in ("missing", "extra_forbidden") and not isinstance(given, (dict, list)):
        text += f" (got {_shown(given)})"
    if len(errors) > 1:
        text += f" [and {len(errors) - 1} more problem(s)]"
    return ConfigError(text, parameter=loc, value=given)


class NbestModel(BaseModel):
    """Base of nbest's models: strict about unknown fields, ConfigError on bad input."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc) from None

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data`` (a dict or a JSON string) into this model.

        Raises:
            ConfigError: naming the first invalid field.
        """
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc) from None


class SamplingParams(NbestModel):
    """How one candidate is sampled. Mirrors vLLM's fields, but rejects what
    vLLM would silently clamp."""

    temperature: float = Field(default=1.0, ge=0.0)
    """Softmax temperature: 0 is greedy decoding; otherwise at least 0.01."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to top_p (1 = off)."""
    top_k: int = -1
    """Keep only the top_k most likely tokens (-1 = off)."""
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    """Drop tokens less likely than min_p times the most likely one (0 = off)."""
    seed: int | None = None
    """Seed of this candidate's random stream; the same seed gives the same text."""
    max_tokens: int = Field(default=256, ge=1)
    """Most new tokens to generate."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end generation (not included in the text)."""
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    """Penalise tokens that already appeared (OpenAI semantics)."""
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    """Penalise tokens by how often they appeared (OpenAI semantics)."""
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    """Multiplicative penalty on repeated tokens (1 = off)."""
    ignore_eos: bool = False
    """Keep generating past the end-of-sequence token, up to max_tokens (for benchmarks)."""
    top_logprobs: int = Field(default=0, ge=0, le=20)
    """How many alternatives to return with each token's log-probability (0: the sampled token only)."""

    @field_validator("temperature")
    @classmethod
    def _no_tiny_temperature(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        return value

    @field_validator("top_k")
    @classmethod
    def _top_k_range(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError("must be -1 (off) or at least 1")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: list[str]) -> list[str]:
        if any(not item for item in value):
            raise ValueError("stop strings must not be empty")
        return value

    @property
    def greedy(self) -> bool:
        """True when this candidate is decoded greedily (temperature 0)."""
        return self.temperature == 0.0


class ChatMessage(NbestModel):
    """One message of a chat prompt."""

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


Prompt = str | list[ChatMessage]
"""Plain text (sent verbatim to the model) or chat messages (rendered with the
model's chat template)."""


def _check_prompt(value: Prompt | None, field: str) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{field} must not be empty")
    elif not value:
        raise ValueError(f"{field} must hold at least one message")
    elif not any(m.content.strip() for m in value):
        raise ValueError(f"{field} messages are all empty")


class Request(NbestModel):
    """One prompt to answer with ``n`` candidates."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    """Identifies the request in logs and engine request ids."""
    prompt: Prompt
    """The question: text, or chat messages."""
    n: int = Field(default=8, ge=1)
    """How many candidates to generate (the orchestrator caps it; default cap 64)."""
    params: SamplingParams = Field(default_factory=SamplingParams)
    """Base sampling settings; strategies start from these."""
    system: str | None = None
    """A system prompt put before the prompt (chat mode only)."""
    chat: bool = True
    """Render the prompt with the model's chat template. A text prompt becomes
    one user message. False sends text verbatim (completion style)."""
    source: str | None = None
    """Task context, e.g. the source sentence of a translation."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free-form data carried into the Result untouched."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_prompt(self.prompt, "prompt")
        if not self.chat and not isinstance(self.prompt, str):
            raise ValueError("chat=False needs a text prompt, not chat messages")
        if not self.chat and self.system is not None:
            raise ValueError("system needs chat=True (a completion-style prompt has no system role)")
        return self

    def rendered(self, prompt: Prompt | None = None) -> Prompt:
        """The prompt an engine receives: chat messages (with the system prompt)
        in chat mode, the bare text otherwise. ``prompt`` overrides the
        request's own (a strategy's prompt variant).

        >>> Request(prompt="Hi", system="Be brief").rendered()
        [ChatMessage(role='system', content='Be brief'), ChatMessage(role='user', content='Hi')]
        """
        prompt = self.prompt if prompt is None else prompt
        if not self.chat:
            return prompt
        messages = [ChatMessage(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
        if self.system is not None and not any(m.role == "system" for m in messages):
            messages.insert(0, ChatMessage(role="system", content=self.system))
        return messages


class CandidateSpec(NbestModel):
    """What one candidate will be: plain data, printable, storable, replayable."""

    index: int = Field(ge=0)
    """Position in the plan (0 .. n-1)."""
    engine: str = "default"
    """Name of the engine (route) that generates it."""
    params: SamplingParams
    """Its sampling settings."""
    prompt: Prompt | None = None
    """A prompt variant; None uses the request's prompt."""
    strategy: str = "fixed"
    """Label of the strategy (and step) that made this spec."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_prompt(self.prompt, "prompt")
        return self


class CandidateUpdate(NbestModel):
    """What an engine reports for one request: partial while streaming, then final."""

    text: str
    """The text generated so far."""
    num_tokens: int = Field(default=0, ge=0)
    """Tokens generated so far."""
    prompt_tokens: int = Field(default=0, ge=0)
    """Tokens in the rendered prompt."""
    cumulative_logprob: float | None = None
    """Sum of the sampled tokens' log-probabilities, if the engine reports them."""
    token_logprobs: list[float] | None = None
    """Each sampled token's log-probability, if the engine reports them."""
    top_logprobs: list[dict[str, float]] | None = None
    """Per generated token, the most likely alternatives (decoded text -> log-probability,
    the sampled token included), when ``SamplingParams.top_logprobs`` > 0."""
    finish_reason: str | None = None
    """Why generation stopped ("stop", "length", ...); None while running."""
    finished: bool = False
    """True on the last update of a request."""
    new_token_logprobs: list[float] | None = Field(default=None, repr=False)
    """With token updates (``Engine.generate(..., tokens=True)``): the log-probabilities of
    the tokens generated since the previous update (the final update included), so an
    observer sees every token exactly once; None without token updates."""
    new_top_logprobs: list[dict[str, float]] | None = Field(default=None, repr=False)
    """With token updates and ``SamplingParams.top_logprobs`` > 0: the alternatives of the
    tokens generated since the previous update, one dict per token."""


class Candidate(NbestModel):
    """One generated candidate, its spec, its scores and its place in the ranking."""

    index: int = Field(ge=0)
    """Position in the plan; stable across ranking."""
    rank: int | None = None
    """1 for the best; None for a failed candidate."""
    text: str = ""
    """The generated text."""
    score: float | None = None
    """Combined reranker score (higher is better)."""
    confidence: float | None = None
    """Calibrated probability that this candidate is the best one (sums to 1 over candidates)."""
    scores: dict[str, float | None] = Field(default_factory=dict)
    """Each reranker's raw score, by reranker name."""
    spec: CandidateSpec
    """The settings that produced it."""
    finish_reason: str | None = None
    """Why generation stopped: "stop", "length", "timeout", "error", "cancelled", or
    "pruned" (stopped early by a pruning policy: its text is partial and it does not vote)."""
    num_tokens: int = 0
    """Generated tokens."""
    prompt_tokens: int = 0
    """Tokens of its rendered prompt."""
    cumulative_logprob: float | None = None
    """Sum of the sampled tokens' log-probabilities."""
    mean_logprob: float | None = None
    """cumulative_logprob / num_tokens: the length-normalised log-probability."""
    token_logprobs: list[float] | None = Field(default=None, repr=False)
    """Each sampled token's log-probability."""
    top_logprobs: list[dict[str, float]] | None = Field(default=None, repr=False)
    """Per token, the most likely alternatives (text -> log-probability), when asked for."""
    signals: dict[str, float] | None = None
    """Its confidence signals (``mean_confidence``, ``lowest_group``, ``tail``, ``bottom10``,
    ``self_certainty``, ``mean_logprob``: see :mod:`nbest.rerankers.confidence`), computed
    when it finished from its per-token log-probabilities; None without them."""
    latency_s: float | None = None
    """Seconds from sending the request to its last token."""
    error: str | None = None
    """Why this candidate failed; None when it succeeded."""

    @property
    def ok(self) -> bool:
        """True when the candidate was generated without error."""
        return self.error is None

    @property
    def pruned(self) -> bool:
        """True when a pruning policy stopped it early (partial text; it does not vote)."""
        return self.finish_reason == "pruned"

    @property
    def complete(self) -> bool:
        """True when it was generated in full without error: the candidates that are ranked and vote."""
        return self.error is None and not self.pruned


class Score(NbestModel):
    """One reranker's verdict on one candidate."""

    value: float | None
    """Higher is better; None when this candidate could not be scored."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Anything the reranker wants to show (extracted answer, votes, ...)."""

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number or None")
        return value


class Answer(NbestModel):
    """Candidates that give the same answer, grouped."""

    answer: str
    """The (normalised) answer they share."""
    confidence: float
    """Sum of the supporting candidates' confidences."""
    support: list[int]
    """Indices of the candidates that give this answer."""


class Usage(NbestModel):
    """Tokens spent on a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Timings(NbestModel):
    """Wall-clock seconds spent on a request."""

    generate_s: float = 0.0
    """From the start to the last candidate."""
    rerank_s: float = 0.0
    """Ranking the finished candidates (work prepared per candidate during generation not included)."""
    rerank_after_last_s: float = 0.0
    """From the last candidate to the ranked Result: what reranking adds to the wait
    once per-candidate work (embeddings, extracted answers) runs as candidates finish."""


class Diversity(NbestModel):
    """How different a set of candidates is from itself (higher: more diverse)."""

    distinct_1: float
    """Distinct unigrams / all unigrams, over all candidates."""
    distinct_2: float
    """Distinct bigrams / all bigrams, over all candidates."""
    self_bleu: float | None = None
    """Mean BLEU of each candidate against the others (0-100; lower: more diverse)."""
    embedding_distance: float | None = None
    """Mean pairwise cosine distance of the candidates' embeddings."""


class Result(NbestModel):
    """Every candidate of a request, ranked, with the best one and the answers."""

    id: str
    """The request's id."""
    prompt: Prompt
    """The request's prompt."""
    n: int
    """Candidates asked for."""
    candidates: list[Candidate]
    """All candidates, best first; failed ones last (rank None)."""
    best: Candidate | None
    """The top-ranked candidate; None when every candidate failed."""
    answers: list[Answer] = Field(default_factory=list)
    """Distinct answers, most confident first."""
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    warnings: list[str] = Field(default_factory=list)
    """Non-fatal problems, e.g. a reranker that failed on this request."""
    diversity: Diversity | None = None
    """Diversity of the candidates, when asked for."""
    samples_used: int | None = None
    """With adaptive early stopping (``until=`` and ``wave=``): how many of the
    ``n`` planned candidates were generated and are listed here before the
    rule stopped sampling (at most ``n``). None when every planned candidate
    was generated without a stopping rule."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The request's metadata."""
    ranker: dict[str, Any] | None = None
    """The configuration of the ranker that ranked these candidates (its rerankers'
    configs with their weights, normalisation, temperature: a
    ``nbest.rerankers.RankerConfig``), when every reranker has one. Lets a logged
    choice be refitted into a ranker that loads back exactly."""
    ranker_version: int | None = None
    """The version of the learned ranker that ranked these candidates, when the server
    learns from choices (``nbest serve --learn``; 0: the base ranker, nothing learned yet);
    None otherwise."""
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """By route (``CandidateSpec.engine``), what each engine that generated these candidates
    ran with (:func:`nbest.engines.base.describe_engine`): ``kind`` and, for ``vllm``, the
    ``model``, the engine ``args`` vLLM got, why it compiles or not (``compile``), the ``env``
    of vLLM's CPU platform it started with and its ``start_s``; for ``openai``, the ``model``
    and the ``endpoints``. Empty in a Result from before this field."""

    @field_validator("candidates")
    @classmethod
    def _unique_indices(cls, value: list[Candidate]) -> list[Candidate]:
        seen: set[int] = set()
        for candidate in value:
            if candidate.index in seen:
                raise ValueError(f"candidate index {candidate.index} appears twice: each candidate has its own index")
            seen.add(candidate.index)
        return value

    @property
    def failed(self) -> list[Candidate]:
        """Candidates that failed, with their errors."""
        return [c for c in self.candidates if not c.ok]
