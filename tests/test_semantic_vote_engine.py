"""Clustered votes on sentences the embedded model really writes (real vLLM engine)."""

from __future__ import annotations

import pytest

from nbest import Orchestrator, VLLMEngine, stopping
from nbest.rerankers import MajorityVote, Ranker
from nbest.rerankers.cluster import residual

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

QUESTION = "What is the capital of France? Answer in one sentence."


async def test_sentence_answers_vote_as_one_meaning(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate(QUESTION, n=8, temperature=0.8, max_tokens=24, seed=0, rerankers=[MajorityVote()])
    ok = [c for c in result.candidates if c.ok]
    assert len(ok) == 8
    top = result.answers[0]
    assert "paris" in top.answer
    # every candidate whose only new content word is Paris is in the top cluster
    bare = {c.index for c in ok if residual(c.text, QUESTION) == {"pari"}}
    assert bare and bare <= set(top.support)
    # the same candidates counted by whole text: more answers, a smaller top share
    plain = await Ranker([MajorityVote(cluster="none")]).rank(orch.request(QUESTION, n=8), ok)
    assert len(plain.answers) > len(result.answers)
    assert plain.answers[0].confidence < top.confidence
    assert sum(len(a.support) for a in result.answers) == sum(len(a.support) for a in plain.answers)


async def test_beta_counts_clusters_while_sampling(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate(
            QUESTION,
            n=16,
            wave=4,
            until=stopping.Beta(0.9, weighted=True),
            temperature=0.8,
            max_tokens=24,
            seed=0,
            rerankers=[MajorityVote(weight="prob")],
        )
    assert result.samples_used is not None and result.samples_used < 16  # the clusters agree early
    assert "paris" in result.answers[0].answer
