"""A scripted engine for fast unit tests of orchestration logic.

Replies are queued with ``enqueue`` (taken in call order) or computed by
``respond``; every call is kept in ``history``; aborts in ``aborted``.

A :class:`Step` may carry a token stream (``stream``: one :class:`Tok` per
token, with its text, log-probability and top alternatives). Called with
``tokens=True`` (the engine sets ``token_updates = True``) it then yields one
partial update per token, ``token_delay`` seconds apart, each holding that
token in ``new_token_logprobs``/``new_top_logprobs``; the last token comes with
the final update. Without ``tokens=True`` only the final update is yielded,
after the same total time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio

from nbest.types import CandidateUpdate, Prompt, SamplingParams


@dataclass
class Tok:
    """One scripted token: its text, log-probability and top alternatives (empty: none)."""

    text: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


def toks(text_confidences: list[tuple[str, float]], k: int = 2) -> list[Tok]:
    """Tokens whose DeepConf token confidence (minus the mean of the alternatives'
    log-probabilities) is exactly the given value: ``k`` alternatives, the sampled one
    at ``-0.1`` and the others set so that their mean is ``-confidence``."""
    out = []
    for text, confidence in text_confidences:
        rest = (-confidence * k + 0.1) / (k - 1)
        top = {text: -0.1, **{f"alt{j}": rest for j in range(1, k)}}
        out.append(Tok(text, -0.1, top))
    return out


@dataclass
class Step:
    text: str = "ok"
    delay: float = 0.0
    mean_logprob: float = -1.0
    tokens: int = 4
    error: BaseException | None = None
    finish_reason: str = "stop"
    stream: list[Tok] | None = None
    """Per-token script; when set it fixes ``text`` and ``tokens``."""
    token_delay: float = 0.0
    """Seconds before each token of ``stream``."""

    def __post_init__(self) -> None:
        if self.stream is not None:
            self.text = "".join(t.text for t in self.stream)
            self.tokens = len(self.stream)


@dataclass
class Call:
    prompt: Prompt
    params: SamplingParams
    request_id: str
    tokens: bool = False
    """Whether token updates were asked for."""
    finished_before: int = 0
    """Requests of this engine that had finished when this one was sent."""


@dataclass
class ScriptedEngine:
    name: str = "scripted"
    respond: Callable[[Prompt, SamplingParams, str], Step] | None = None
    script: deque[Step] = field(default_factory=deque)
    history: list[Call] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    max_running: int = 0
    closed: bool = False
    yielded: dict[str, int] = field(default_factory=dict)
    """Per request id, the tokens handed out so far (token updates)."""
    token_updates = True

    def enqueue(self, text: str = "ok", **kwargs: object) -> ScriptedEngine:
        self.script.append(Step(text, **kwargs))  # type: ignore[arg-type]
        return self

    def _next(self, prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        if self.script:
            return self.script.popleft()
        if self.respond is not None:
            return self.respond(prompt, params, request_id)
        return Step(text=f"answer {params.seed}")

    async def generate(
        self, prompt: Prompt, params: SamplingParams, request_id: str, tokens: bool = False
    ) -> AsyncIterator[CandidateUpdate]:
        self.history.append(Call(prompt, params, request_id, tokens, len(self.finished)))
        step = self._next(prompt, params, request_id)
        self.running.add(request_id)
        self.max_running = max(self.max_running, len(self.running))
        try:
            await anyio.sleep(step.delay)
            if step.error is not None:
                raise step.error
            if step.stream is None:
                yield CandidateUpdate(
                    text=step.text,
                    num_tokens=step.tokens,
                    prompt_tokens=3,
                    cumulative_logprob=step.mean_logprob * step.tokens,
                    token_logprobs=[step.mean_logprob] * step.tokens,
                    finish_reason=step.finish_reason,
                    finished=True,
                )
            else:
                async for update in self._stream(step, params, request_id, tokens):
                    yield update
            self.finished.append(request_id)
        finally:
            self.running.discard(request_id)

    async def _stream(self, step: Step, params: SamplingParams, request_id: str, tokens: bool) -> AsyncIterator[CandidateUpdate]:
        assert step.stream is not None
        k = params.top_logprobs
        tops = [dict(sorted(t.top.items(), key=lambda kv: -kv[1])[:k]) for t in step.stream]
        n = len(step.stream)
        if not tokens:
            await anyio.sleep(step.token_delay * n)
        for i, tok in enumerate(step.stream):
            final = i == n - 1
            if tokens:
                await anyio.sleep(step.token_delay)
            elif not final:
                continue
            self.yielded[request_id] = i + 1
            logprobs = [t.logprob for t in step.stream[: i + 1]]
            yield CandidateUpdate(
                text="".join(t.text for t in step.stream[: i + 1]),
                num_tokens=i + 1,
                prompt_tokens=3,
                cumulative_logprob=sum(logprobs),
                token_logprobs=logprobs if final else None,
                top_logprobs=tops if final and k > 0 else None,
                finish_reason=step.finish_reason if final else None,
                finished=final,
                new_token_logprobs=[tok.logprob] if tokens else None,
                new_top_logprobs=[tops[i]] if tokens and k > 0 else None,
            )

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def aclose(self) -> None:
        self.closed = True
