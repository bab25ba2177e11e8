"""Adaptive early stopping and translation on the real vLLM engine (embedded default model)."""

from __future__ import annotations

import pytest

from nbest import Orchestrator, VLLMEngine, rerankers, stopping
from nbest.rerankers import Ranker
from nbest.tasks import translate

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

EASY = "What is 2 + 2? Answer with the number."


async def test_an_easy_question_stops_early(vllm_engine: VLLMEngine) -> None:
    # SmolLM2-135M answers "4" every time at a low temperature: the first unanimous wave settles it
    rule, wave = stopping.Beta(0.95), 4
    vote = Ranker([rerankers.MajorityVote(extract="number")])
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate(EASY, n=32, temperature=0.2, seed=0, max_tokens=24, until=rule, wave=wave, rerankers=vote)
        assert result.samples_used is not None and result.samples_used < 32
        assert len(result.candidates) == result.samples_used and result.n == 32
        # the waves are the plan's first candidates, in plan order
        assert sorted(c.index for c in result.candidates) == list(range(result.samples_used))
        assert result.answers[0].answer == "4"
        # the rule, asked after each wave about the candidates generated so far, first says stop at samples_used
        request = orch.request(EASY, 32, temperature=0.2, seed=0, max_tokens=24)
        decisions = []
        for size in range(wave, result.samples_used + 1, wave):
            so_far = await orch.rank(request, [c for c in result.candidates if c.index < size], ranker=vote)
            decisions.append(rule.check(so_far).stop)
    assert decisions == [False] * (len(decisions) - 1) + [True]


async def test_a_translation_is_ranked(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await translate(
            orch, "Der Hund schläft im Garten.", "German", "English", n=6, temperature=0.7, seed=0, max_tokens=40
        )
    assert result.warnings == []
    ok = [c for c in result.candidates if c.ok]
    assert len(ok) == 6 and [c.rank for c in ok] == list(range(1, 7))
    assert all(set(c.scores) == {"mbr_chrf", "source_sim"} for c in ok)
    assert all(c.scores["mbr_chrf"] is not None and 0 <= c.scores["mbr_chrf"] <= 100 for c in ok)
    assert all("\n\n" not in c.text for c in ok)  # the blank-line stop ends each translation
    assert result.best is not None and "dog" in result.best.text.lower()
    scores = [c.score for c in ok]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
