"""The real vLLM engine with the embedded default model (one engine per session)."""

from __future__ import annotations

import anyio
import pytest

from nbest import Orchestrator, VLLMEngine, strategies
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_eight_candidates_with_logprobs(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate("What is the capital of France?", n=8, max_tokens=48, seed=1)
    assert len(result.candidates) == 8 and not result.failed
    for c in result.candidates:
        assert c.text.strip()
        assert c.num_tokens > 0 and c.finish_reason in ("stop", "length")
        assert c.mean_logprob is not None and c.mean_logprob < 0
        assert c.token_logprobs is not None and len(c.token_logprobs) == c.num_tokens
        assert c.cumulative_logprob == pytest.approx(sum(c.token_logprobs), abs=1e-3)
        assert c.prompt_tokens > 0
    assert [c.rank for c in result.candidates] == list(range(1, 9))
    assert result.best is not None and result.best.confidence is not None
    assert sum(c.confidence or 0 for c in result.candidates) == pytest.approx(1.0)
    assert result.answers and sum(a.confidence for a in result.answers) == pytest.approx(1.0)


async def test_same_seed_same_texts_different_seeds_differ(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        a = await orch.generate("Write one sentence about the sea.", n=4, max_tokens=32, seed=7)
        b = await orch.generate("Write one sentence about the sea.", n=4, max_tokens=32, seed=7)
        c = await orch.generate("Write one sentence about the sea.", n=4, max_tokens=32, seed=1000)
    by_index = lambda r: [x.text for x in sorted(r.candidates, key=lambda x: x.index)]  # noqa: E731
    assert by_index(a) == by_index(b)
    assert by_index(a) != by_index(c)
    assert len(set(by_index(a))) > 1  # seeds seed+i make the candidates differ


class LastIsShort:
    """The last candidate of the plan stops after 2 tokens; the others may write up to 96."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        specs = strategies.Fixed().plan(request)
        last = len(specs) - 1
        return [
            s.model_copy(update={"params": s.params.model_copy(update={"max_tokens": 2 if s.index == last else 96})})
            for s in specs
        ]


async def test_stream_yields_the_first_candidate_before_the_last_finishes(vllm_engine: VLLMEngine) -> None:
    arrivals: list[tuple[Candidate, int]] = []
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        async for c in orch.stream("Tell me a long story about a dragon.", n=4, strategy=LastIsShort(), seed=3):
            arrivals.append((c, vllm_engine.num_unfinished_requests()))
    first, unfinished = arrivals[0]
    # the short candidate comes first although it is last in the plan: candidates stream in finishing order
    assert first.index == 3 and first.num_tokens <= 2
    # and it came while the three long ones were still generating in the engine
    assert unfinished == 3
    assert sorted(c.index for c, _ in arrivals) == [0, 1, 2, 3]
    assert all(c.num_tokens > 2 for c, _ in arrivals[1:])


async def test_cancelling_mid_generation_leaves_nothing_running(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        with anyio.move_on_after(1.5) as scope:
            await orch.generate("Write a very long essay about rivers.", n=8, max_tokens=1024, seed=5)
        assert scope.cancelled_caught
        assert vllm_engine.num_unfinished_requests() == 0
        # and the engine still serves
        result = await orch.generate("Say hi.", n=2, max_tokens=8, seed=1)
    assert not result.failed


async def test_timeout_returns_the_finished_candidates(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate("Write a very long essay about mountains.", n=3, max_tokens=2000, seed=2, timeout=1.0)
    assert {c.finish_reason for c in result.candidates} <= {"timeout", "stop"}
    assert any(c.finish_reason == "timeout" for c in result.candidates)
    assert vllm_engine.num_unfinished_requests() == 0


async def test_chat_template_and_raw_prompts(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        chat = await orch.generate("What is 2 + 2? Answer with a number.", n=1, temperature=0, max_tokens=16)
        raw = await orch.run(
            Request(prompt="The capital of France is", n=1, chat=False, params=SamplingParams(temperature=0, max_tokens=8))
        )
    assert chat.best is not None and "4" in chat.best.text
    assert raw.best is not None and "Paris" in raw.best.text
    # the chat template adds its own tokens: the chat prompt is longer than the bare question
    assert chat.best.prompt_tokens > 15


async def test_large_seeded_batch_survives(vllm_engine: VLLMEngine) -> None:
    """16 prompts x 9 seeded candidates at once: on the CPU build this killed the engine while
    chunked prefill was on ("CPU Generator does not use offset"; with it on, 8 prompts x 9
    already did, 4 x 9 did not)."""
    prompts = [
        f"Question {i}: in one short sentence, describe the colour number {i} of a rainbow and why it appears." for i in range(16)
    ]
    async with Orchestrator(vllm_engine, close_engines=False, max_in_flight=512) as orch:
        results = await orch.generate_many(prompts, n=9, max_tokens=4, seed=11, concurrency=16)
    assert len(results) == 16
    assert all(len(r.candidates) == 9 and not r.failed for r in results)
    seeds = {c.spec.params.seed for c in results[0].candidates}
    assert seeds == set(range(11, 20))
