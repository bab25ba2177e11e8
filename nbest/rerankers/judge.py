"""LLM-as-a-judge: an nbest engine rates each candidate from 1 to 10.

The judge sees the rubric, the question (or the translation source) and one
candidate, and is asked for a single number. Decoding is greedy with
``top_logprobs`` alternatives per token. When the engine reports those
alternatives (``CandidateUpdate.top_logprobs``: one ``{token text: logprob}``
mapping per generated token), the score is the *expected* rating under the
judge's distribution over the rating tokens "1" .. "10" at the first position
where a rating token appears; ties between candidates the judge would both
call "8" are then broken by how sure it is. A "10" split into "1" + "0" by the
tokenizer counts as 1 at that position (a slight pessimism). Without the
alternatives, the score is the rating in the judge's greedy text
(``details["method"]`` says which was used).

The judge engine may be the one that generated the candidates. Ratings run
concurrently; the engine batches them.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import anyio
from pydantic import Field

from nbest.errors import ConfigError
from nbest.rerankers.crossencoder import query_text
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, ChatMessage, Request, SamplingParams, Score

__all__ = ["DEFAULT_RUBRIC", "LLMJudge", "LLMJudgeConfig", "expected_rating", "parse_rating"]

DEFAULT_RUBRIC = (
    "You are a strict grader. Rate how correct, helpful and well written the answer is "
    "on a scale from 1 (useless or wrong) to 10 (perfect)."
)

_RATING = re.compile(r"(?<!\d)(10|[1-9])(?!\d)")
_TOKENS = {str(r): r for r in range(1, 11)}


def parse_rating(text: str) -> int | None:
    """The first rating 1-10 in the judge's text.

    >>> [parse_rating(t) for t in ["8", "Rating: 10/10", "I'd say 7.", "none", "42"]]
    [8, 10, 7, None, None]
    """
    m = _RATING.search(text)
    return int(m.group(1)) if m else None


def expected_rating(top_logprobs: Sequence[Mapping[str, float]]) -> tuple[float, dict[str, float]] | None:
    """Expected rating at the first position whose alternatives include a rating token.

    Returns the expectation and the renormalised distribution over ratings,
    or None when no position offers a rating.

    >>> value, dist = expected_rating([{" ": -0.1}, {"8": math.log(0.6), "9": math.log(0.2), "x": math.log(0.2)}])
    >>> round(value, 3), {k: round(v, 3) for k, v in dist.items()}
    (8.25, {'8': 0.75, '9': 0.25})
    """
    for position in top_logprobs:
        probs: dict[str, float] = {}
        for token, logprob in position.items():
            key = token.strip()
            if key in _TOKENS and math.isfinite(logprob):
                probs[key] = probs.get(key, 0.0) + math.exp(logprob)
        total = sum(probs.values())
        if total > 0:
            dist = {k: p / total for k, p in sorted(probs.items(), key=lambda kv: _TOKENS[kv[0]])}
            return sum(_TOKENS[k] * p for k, p in dist.items()), dist
    return None


class LLMJudge:
    """Score = the judge model's rating of the candidate, 1-10 (expected value when possible).

    Args:
        engine: any nbest engine (``VLLMEngine``, ``OpenAIEngine`` ...).
        rubric: what the judge is told to grade (the system message).
        top_logprobs: alternatives to ask for per token (1-20).
        max_tokens: tokens the judge may write (a few suffice).
        chat: send chat messages (True) or one text prompt.
        name: the reranker's name (``"judge"``).

    Raises:
        ConfigError: an object that is not an engine, bad numbers.
    """

    def __init__(
        self,
        engine: Generator,
        *,
        rubric: str = DEFAULT_RUBRIC,
        top_logprobs: int = 20,
        max_tokens: int = 4,
        chat: bool = True,
        name: str = "judge",
    ) -> None:
        if not callable(getattr(engine, "generate", None)):
            raise ConfigError(f"engine: {engine!r} is not an engine (needs generate)", parameter="engine")
        if not 1 <= top_logprobs <= 20:
            raise ConfigError("top_logprobs: must be 1..20", parameter="top_logprobs", value=top_logprobs)
        if max_tokens < 1:
            raise ConfigError("max_tokens: must be at least 1", parameter="max_tokens", value=max_tokens)
        if not rubric.strip():
            raise ConfigError("rubric: must not be empty", parameter="rubric")
        self.engine = engine
        self.rubric = rubric
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens, top_logprobs=top_logprobs, seed=0)
        self.chat = chat
        self.name = name

    def to_config(self) -> LLMJudgeConfig:
        """The config that rebuilds this judge (on the engine it is given then)."""
        if self.name != "judge":
            raise ConfigError("judge: built with a custom name; it has no config", parameter="name")
        return LLMJudgeConfig(
            rubric=self.rubric, top_logprobs=self.params.top_logprobs, max_tokens=self.params.max_tokens, chat=self.chat
        )

    def prompt(self, request: Request, candidate: str) -> str | list[ChatMessage]:
        """What the judge is sent for one candidate."""
        question = query_text(request)
        label = "Source text" if request.source is not None else "Question"
        body = f"{label}:\n{question}\n\nAnswer:\n{candidate}\n\nRate the answer from 1 to 10. Reply with the number only."
        if not self.chat:
            return f"{self.rubric}\n\n{body}\n\nRating:"
        return [ChatMessage(role="system", content=self.rubric), ChatMessage(role="user", content=body)]

    async def _judge(self, request: Request, candidate: Candidate) -> Score:
        request_id = f"judge-{request.id}-{candidate.index}-{uuid.uuid4().hex[:8]}"
        last: Any = None
        try:
            async for update in self.engine.generate(self.prompt(request, candidate.text), self.params, request_id):
                last = update
        except Exception as exc:  # one failed rating leaves the others
            return Score(value=None, details={"error": f"{type(exc).__name__}: {exc}"})
        if last is None:
            return Score(value=None, details={"error": "the judge returned nothing"})
        text = str(last.text)
        alternatives = getattr(last, "top_logprobs", None)
        if alternatives:
            found = expected_rating(alternatives)
            if found is not None:
                value, dist = found
                return Score(value=value, details={"method": "logprobs", "distribution": dist, "judge_text": text})
        rating = parse_rating(text)
        return Score(value=None if rating is None else float(rating), details={"method": "text", "judge_text": text})

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        results: list[Score | None] = [None] * len(candidates)

        async def one(i: int) -> None:
            results[i] = await self._judge(request, candidates[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(candidates)):
                tg.start_soon(one, i)
        return [r if r is not None else Score(value=None) for r in results]


@RERANKERS.register("judge")
class LLMJudgeConfig(RerankerConfig):
    """``judge[:RUBRIC]``: an LLM rates each candidate 1-10 (:class:`LLMJudge`); built on the run's engine."""

    kind: Literal["judge"] = "judge"
    rubric: str = Field(default=DEFAULT_RUBRIC, min_length=1)
    """What the judge is told to grade (its system message)."""
    top_logprobs: int = Field(default=20, ge=1, le=20)
    """Alternatives asked for per token (for the expected rating)."""
    max_tokens: int = Field(default=4, ge=1)
    """Tokens the judge may write."""
    chat: bool = True
    """Send chat messages (True) or one text prompt."""

    short_help: ClassVar[str] = "judge[:RUBRIC]"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        return cls(rubric=arg) if arg else cls()

    def reranker_name(self) -> str:
        return "judge"

    def build(self, *, engine: Generator | None = None) -> LLMJudge:
        if engine is None:
            raise ConfigError("--reranker judge: needs an engine to ask (the run's engine)", parameter="reranker", value="judge")
        return LLMJudge(engine, rubric=self.rubric, top_logprobs=self.top_logprobs, max_tokens=self.max_tokens, chat=self.chat)
