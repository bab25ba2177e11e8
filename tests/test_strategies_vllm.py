"""Strategies on the real vLLM engine with the embedded default model."""

from __future__ import annotations

import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.metrics import diversity
from nbest.strategies import GreedyPlusSamples, Route, TemperatureLadder
from nbest.types import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_ladder_is_more_diverse_at_the_hot_end(vllm_engine: VLLMEngine) -> None:
    ladder = TemperatureLadder(0.0, 1.5)
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate("Write a short story about a dragon.", n=12, strategy=ladder, max_tokens=48, seed=11)
    assert not result.failed
    by_index = sorted(result.candidates, key=lambda c: c.index)
    assert [c.spec.params.temperature for c in by_index] == ladder.temperatures(12)
    cold = diversity([c.text for c in by_index[:6]])  # t = 0 .. 0.68
    hot = diversity([c.text for c in by_index[6:]])  # t = 0.82 .. 1.5
    assert hot.distinct_2 > cold.distinct_2
    assert cold.self_bleu is not None and hot.self_bleu is not None
    assert hot.self_bleu < cold.self_bleu


async def test_greedy_candidate_equals_vllm_greedy(vllm_engine: VLLMEngine) -> None:
    prompt = "Name three colours of the rainbow."
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        request = orch.request(prompt, 3, max_tokens=32, seed=4)
        result = await orch.run(request, strategy=GreedyPlusSamples(temperature=1.0))
    greedy = next(c for c in result.candidates if c.index == 0)
    assert greedy.spec.strategy == "greedy" and greedy.spec.params.temperature == 0.0
    direct = None
    async for update in vllm_engine.generate(request.rendered(), SamplingParams(temperature=0.0, max_tokens=32), "direct-greedy"):
        direct = update
    assert direct is not None and direct.finished
    assert greedy.text == direct.text
    assert greedy.text.strip()


async def test_route_tags_every_candidate_with_its_engine(vllm_engine: VLLMEngine) -> None:
    route = Route({"a": 1, "b": 1}, TemperatureLadder(0.3, 1.0))
    async with Orchestrator({"a": vllm_engine, "b": vllm_engine}, close_engines=False) as orch:
        request = orch.request("Say hello.", 6, max_tokens=8, seed=2)
        planned = {s.index: s.engine for s in route.plan(request)}
        result = await orch.run(request, strategy=route)
    assert set(planned.values()) == {"a", "b"}
    assert len(result.candidates) == 6 and not result.failed
    for c in result.candidates:
        assert c.spec.engine == planned[c.index]
        assert c.spec.strategy.startswith(f"route.{c.spec.engine}:ladder[")
        assert c.text.strip()
