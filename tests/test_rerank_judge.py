"""LLMJudge: expected rating from alternatives, text fallback, failures, and the real engine."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from nbest import Orchestrator
from nbest.errors import ConfigError
from nbest.rerankers import LLMJudge, MeanLogProb, Ranker
from nbest.rerankers.judge import expected_rating
from nbest.types import Candidate, CandidateSpec, ChatMessage, Prompt, Request, SamplingParams
from tests.scripted import ScriptedEngine, Step

REQUEST = Request(prompt="What is the capital of France?")


def cands(texts: list[str]) -> list[Candidate]:
    return [Candidate(index=i, spec=CandidateSpec(index=i, params=SamplingParams()), text=t) for i, t in enumerate(texts)]


@dataclass
class Reply:
    text: str
    top_logprobs: list[dict[str, float]] | None = None
    finished: bool = True


@dataclass
class AlternativesEngine:
    """Answers each judge prompt from a table keyed by the candidate text in the prompt."""

    table: dict[str, list[dict[str, float]]]
    name: str = "alt"
    seen: list[SamplingParams] = field(default_factory=list)

    async def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[Reply]:
        self.seen.append(params)
        body = prompt[-1].content if isinstance(prompt, list) else prompt
        for key, alternatives in self.table.items():
            if f"Answer:\n{key}\n" in body:
                best = max(alternatives[0], key=lambda t: alternatives[0][t])
                yield Reply(text=best, top_logprobs=alternatives)
                return
        raise RuntimeError("no such candidate")

    async def abort(self, request_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


@pytest.mark.asyncio
async def test_expected_rating_from_alternatives_breaks_ties() -> None:
    engine = AlternativesEngine(
        {
            "Paris": [{"9": math.log(0.5), "10": math.log(0.3), "8": math.log(0.2)}],
            "Paris, I think": [{"9": math.log(0.5), "8": math.log(0.5)}],
            "Lyon": [{"Sure": -0.01}, {"2": math.log(0.9), "3": math.log(0.1)}],
        }
    )
    scores = await LLMJudge(engine).score(REQUEST, cands(["Paris", "Paris, I think", "Lyon"]))
    assert [s.value for s in scores] == pytest.approx([9.1, 8.5, 2.1])
    assert scores[0].details["method"] == "logprobs"
    assert scores[2].details["distribution"] == pytest.approx({"2": 0.9, "3": 0.1})
    assert all(p.temperature == 0 and p.top_logprobs == 20 for p in engine.seen)


def test_expected_rating_none_without_rating_tokens() -> None:
    assert expected_rating([{"hello": -0.1}, {"world": -0.2}]) is None


@pytest.mark.asyncio
async def test_text_fallback_and_failures() -> None:
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        body = prompt[-1].content if isinstance(prompt, list) else prompt
        if "Answer:\nParis\n" in body:
            return Step(text="Rating: 9")
        if "Answer:\nLyon\n" in body:
            return Step(text="3")
        if "Answer:\nboom\n" in body:
            return Step(error=RuntimeError("judge down"))
        return Step(text="no idea")

    engine = ScriptedEngine(respond=respond)
    scores = await LLMJudge(engine, rubric="Grade geography.").score(REQUEST, cands(["Paris", "Lyon", "boom", "???"]))
    assert [s.value for s in scores] == [9.0, 3.0, None, None]
    assert scores[0].details["method"] == "text"
    assert "judge down" in scores[2].details["error"]
    system = engine.history[0].prompt[0]
    assert isinstance(system, ChatMessage) and system.content == "Grade geography."


@pytest.mark.asyncio
async def test_judge_in_a_ranker_orders_candidates() -> None:
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        body = prompt[-1].content if isinstance(prompt, list) else prompt
        return Step(text="8" if "Answer:\nParis" in body else "2")

    engine = ScriptedEngine(respond=respond)
    cs = cands(["Lyon", "Paris"])
    ranked = await Ranker([LLMJudge(engine)]).rank(REQUEST, cs)
    assert [c.text for c in ranked.candidates] == ["Paris", "Lyon"]


def test_bad_judge_settings() -> None:
    with pytest.raises(ConfigError, match="engine"):
        LLMJudge(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="top_logprobs"):
        LLMJudge(ScriptedEngine(), top_logprobs=0)
    with pytest.raises(ConfigError, match="rubric"):
        LLMJudge(ScriptedEngine(), rubric="  ")


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_judge_on_the_real_engine(vllm_engine: object) -> None:
    judge = LLMJudge(vllm_engine)  # type: ignore[arg-type]
    texts = ["The capital of France is Paris.", "The capital of France is Berlin.", "Paris."]
    scores = await judge.score(REQUEST, cands(texts))
    assert len(scores) == 3
    rated = [s for s in scores if s.value is not None]
    assert rated, [s.details for s in scores]
    assert all(1.0 <= (s.value or 0) <= 10.0 for s in rated)
    async with Orchestrator(vllm_engine, close_engines=False) as orch:  # type: ignore[arg-type]
        result = await orch.generate(
            "What is the capital of France? Answer in one word.",
            n=3,
            max_tokens=8,
            seed=1,
            rerankers=Ranker([judge, MeanLogProb()]),
        )
    assert len(result.candidates) == 3
    assert all("judge" in c.scores for c in result.candidates if c.ok)
