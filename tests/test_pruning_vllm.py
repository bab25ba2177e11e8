"""Online pruning on the real vLLM engine (embedded default model): a pruned candidate's
engine request is really aborted mid-generation."""

from __future__ import annotations

import anyio
import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.orchestrator.pruning import Prune
from nbest.types import Candidate, CandidateSpec, Request

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

MAX_TOKENS = 160
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
STORY = "Once upon a time, in a land of"


class CountThenStory:
    """Warm-up candidate 0: greedy counting, where every next token is all but certain
    (its lowest group confidence is high). Every later candidate: a story at
    temperature 1, where the model hesitates from the first words, so with ``keep=1``
    (threshold: the warm-up's lowest group) it falls below at its first full window."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        greedy = request.params.model_copy(update={"temperature": 0.0, "seed": None})
        return [CandidateSpec(index=0, params=greedy, prompt=COUNTING, strategy="count")] + [
            CandidateSpec(
                index=i,
                params=request.params.model_copy(update={"temperature": 1.0, "seed": (request.params.seed or 0) + i}),
                prompt=STORY,
                strategy="story",
            )
            for i in range(1, request.n)
        ]


async def test_a_pruned_candidate_is_aborted_at_the_engine(vllm_engine: VLLMEngine) -> None:
    policy = Prune(keep=1.0, warmup=1, window=4)
    peak = 0
    unfinished_when_pruned: int | None = None
    seen: list[Candidate] = []
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        request = orch.request("unused", n=2, chat=False, seed=0, max_tokens=MAX_TOKENS, ignore_eos=True)

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, vllm_engine.num_unfinished_requests())
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async for candidate in orch.stream_request(request, strategy=CountThenStory(), prune=policy):
                seen.append(candidate)
                if candidate.pruned:
                    unfinished_when_pruned = vllm_engine.num_unfinished_requests()
            tg.cancel_scope.cancel()
    warmup, story = sorted(seen, key=lambda c: c.index)
    assert warmup.finish_reason == "length" and warmup.num_tokens == MAX_TOKENS  # generated in full
    assert warmup.signals is not None and story.signals is not None
    assert story.pruned, story.signals
    # stopped at its first full window or soon after, far from the 160 tokens it was asked for
    assert policy.window <= story.num_tokens < MAX_TOKENS // 2
    assert story.token_logprobs is not None and len(story.token_logprobs) == story.num_tokens
    assert story.top_logprobs is not None and len(story.top_logprobs) == story.num_tokens
    assert story.text and story.spec.params.top_logprobs == 5  # raised from 0 so that groups can be computed
    assert story.signals["lowest_group"] < warmup.signals["lowest_group"]
    # the engine was working on it, and once it was pruned the engine had nothing left
    assert peak >= 1 and unfinished_when_pruned == 0
