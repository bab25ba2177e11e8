"""A scripted engine for fast unit tests of orchestration logic.

Replies are queued with ``enqueue`` (taken in call order) or computed by
``respond``; every call is kept in ``history``; aborts in ``aborted``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio

from nbest.types import CandidateUpdate, Prompt, SamplingParams


@dataclass
class Step:
    text: str = "ok"
    delay: float = 0.0
    mean_logprob: float = -1.0
    tokens: int = 4
    error: BaseException | None = None
    finish_reason: str = "stop"


@dataclass
class Call:
    prompt: Prompt
    params: SamplingParams
    request_id: str


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

    def enqueue(self, text: str = "ok", **kwargs: object) -> ScriptedEngine:
        self.script.append(Step(text, **kwargs))  # type: ignore[arg-type]
        return self

    def _next(self, prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        if self.script:
            return self.script.popleft()
        if self.respond is not None:
            return self.respond(prompt, params, request_id)
        return Step(text=f"answer {params.seed}")

    async def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]:
        self.history.append(Call(prompt, params, request_id))
        step = self._next(prompt, params, request_id)
        self.running.add(request_id)
        self.max_running = max(self.max_running, len(self.running))
        try:
            await anyio.sleep(step.delay)
            if step.error is not None:
                raise step.error
            yield CandidateUpdate(
                text=step.text,
                num_tokens=step.tokens,
                prompt_tokens=3,
                cumulative_logprob=step.mean_logprob * step.tokens,
                token_logprobs=[step.mean_logprob] * step.tokens,
                finish_reason=step.finish_reason,
                finished=True,
            )
            self.finished.append(request_id)
        finally:
            self.running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def aclose(self) -> None:
        self.closed = True
