"""``PromptVariants``: system prompts, instruction paraphrases or personas,
one per candidate, on top of an inner sampling strategy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from nbest.errors import ConfigError
from nbest.strategies.base import (
    MAX_ITEMS,
    NestedStrategy,
    StrategyConfig,
    check_items,
    check_nesting,
    check_weights,
    inner_plan,
    positional,
    register,
    rendered_chars_allowed,
    seeded_rng,
)
from nbest.strategies.fixed import Fixed
from nbest.types import CandidateSpec, ChatMessage, NbestModel, Prompt, Request

__all__ = ["PromptVariant", "PromptVariants"]

PLACEHOLDER = "{prompt}"
"""In a ``prompt`` variant, stands for the request's own prompt text."""


class PromptVariant(NbestModel):
    """One way to put the question."""

    text: str = Field(min_length=1)
    """The system prompt, or the replacement prompt (where ``{prompt}`` stands
    for the request's prompt text)."""
    role: Literal["system", "prompt"] = "system"
    """``system``: a system prompt put before the request's messages (it
    replaces the request's own system prompt; needs chat mode). ``prompt``:
    replaces the prompt text (the last user message of a chat prompt)."""

    def apply(self, request: Request, current: Prompt | None = None) -> Prompt:
        """The prompt a candidate gets: ``current`` (default: the request's
        prompt) with this variant applied.

        >>> PromptVariant(text="Answer briefly: {prompt}", role="prompt").apply(Request(prompt="Why?"))
        'Answer briefly: Why?'

        Raises:
            ConfigError: a system variant on a completion-style request (``chat=False``).
        """
        prompt = request.prompt if current is None else current
        if self.role == "system":
            if not request.chat:
                raise ConfigError(
                    "variants: a system-prompt variant needs a chat request (chat=True); use role 'prompt' to rewrite the prompt",
                    parameter="variants",
                )
            messages = (
                [ChatMessage(role="user", content=prompt)]
                if isinstance(prompt, str)
                else [m for m in prompt if m.role != "system"]
            )
            return [ChatMessage(role="system", content=self.text), *messages]
        if isinstance(prompt, str):
            return self._render(prompt)
        messages = list(prompt)
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            return [*messages, ChatMessage(role="user", content=self._render(""))]
        last = users[-1]
        messages[last] = ChatMessage(role="user", content=self._render(messages[last].content))
        return messages

    def _render(self, prompt: str) -> str:
        """The text with ``{prompt}`` replaced, measured before it is built."""
        size = len(self.text) + self.text.count(PLACEHOLDER) * (len(prompt) - len(PLACEHOLDER))
        allowed = rendered_chars_allowed()
        if size > allowed:
            raise ConfigError(
                f"variants: a variant renders a prompt of {size} characters; at most {allowed}",
                parameter="variants",
            )
        return self.text.replace(PLACEHOLDER, prompt)


@register("prompt_variants")
class PromptVariants(StrategyConfig):
    """Each candidate gets one of several prompt variants, round-robin or by a
    weighted draw seeded with the request seed; ``inner`` plans the sampling
    settings. A plain string is a system prompt; ``{"text": "...", "role":
    "prompt"}`` rewrites the prompt itself. Labels read ``variant.V:<inner label>``.

    >>> from nbest.types import Request
    >>> plan = PromptVariants(["You are terse.", "You are a teacher."]).plan(Request(prompt="Why?", n=3))
    >>> [(s.strategy, s.prompt[0].content) for s in plan]
    [('variant.0:fixed', 'You are terse.'), ('variant.1:fixed', 'You are a teacher.'), ('variant.0:fixed', 'You are terse.')]

    Raises:
        ConfigError: no variants, an empty one, weights of the wrong length or
            that do not sum to a positive number, weights with round-robin.
    """

    kind: Literal["prompt_variants"] = "prompt_variants"
    variants: list[PromptVariant]
    """The variants; a plain string is a system prompt."""
    inner: NestedStrategy = Field(default_factory=Fixed)
    """The strategy that plans the sampling settings."""
    assign: Literal["round_robin", "weighted"] = "round_robin"
    """``round_robin``: candidate i gets variant i mod V; ``weighted``: a seeded weighted draw."""
    weights: list[float] | None = None
    """Relative weight of each variant (``weighted`` only; default: equal)."""

    def __init__(
        self, variants: Sequence[str | PromptVariant | dict[str, Any]] | None = None, inner: Any = None, /, **data: Any
    ) -> None:
        super().__init__(**positional(data, variants=None if variants is None else list(variants), inner=inner))

    @field_validator("variants", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:  # refused before any entry is built
                raise ValueError(f"at most {MAX_ITEMS} entries (got {len(value)})")
            return [{"text": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.variants:
            raise ConfigError("variants: give at least one variant (a system prompt or {text, role})", parameter="variants")
        if any(not v.text.strip() for v in self.variants):
            raise ConfigError("variants: a variant's text must not be blank", parameter="variants")
        check_items(self.variants, "variants")
        check_nesting(self)
        if self.weights is not None:
            if self.assign != "weighted":
                raise ConfigError("weights: only used with assign='weighted'", parameter="weights", value=self.weights)
            if len(self.weights) != len(self.variants):
                raise ConfigError(
                    f"weights: one per variant ({len(self.variants)}), got {len(self.weights)}",
                    parameter="weights",
                    value=self.weights,
                )
            check_weights(self.weights, "weights")
        return self

    def assignment(self, request: Request) -> list[int]:
        """Which variant each of the ``request.n`` candidates gets."""
        count = len(self.variants)
        if self.assign == "round_robin":
            return [i % count for i in range(request.n)]
        rng = seeded_rng(request, "variants")
        return rng.choices(range(count), weights=self.weights or [1.0] * count, k=request.n)

    def plan(self, request: Request) -> list[CandidateSpec]:
        specs = inner_plan(self.inner, request)
        return [
            spec.model_copy(
                update={"prompt": self.variants[v].apply(request, spec.prompt), "strategy": f"variant.{v}:{spec.strategy}"}
            )
            for spec, v in zip(specs, self.assignment(request), strict=True)
        ]
