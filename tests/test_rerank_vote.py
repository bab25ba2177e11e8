"""Majority vote: shares, weighting, answer grouping in the ranker and the Result."""

from __future__ import annotations

import math

import pytest

from nbest import Orchestrator
from nbest.errors import ConfigError
from nbest.rerankers import MajorityVote, MeanLogProb, Ranker, parse_spec
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
from tests.scripted import ScriptedEngine

REQUEST = Request(prompt="What is 17 * 3?")


def cands(texts: list[str], means: list[float | None] | None = None) -> list[Candidate]:
    means = means or [None] * len(texts)
    out = []
    for i, (t, m) in enumerate(zip(texts, means, strict=True)):
        spec = CandidateSpec(index=i, params=SamplingParams())
        out.append(
            Candidate(
                index=i,
                spec=spec,
                text=t,
                num_tokens=4 if m is not None else 0,
                mean_logprob=m,
                cumulative_logprob=None if m is None else 4 * m,
            )
        )
    return out


@pytest.mark.asyncio
async def test_vote_shares_uniform() -> None:
    cs = cands(["It is 51.", "51", "I get 52", "51.0", "no idea"])
    scores = await MajorityVote(extract="number").score(REQUEST, cs)
    assert [s.value for s in scores] == [0.6, 0.6, 0.2, 0.6, 0.0]
    assert [s.details["answer"] for s in scores] == ["51", "51", "52", "51", None]
    assert [s.details["votes"] for s in scores] == [3, 3, 1, 3, 0]


@pytest.mark.asyncio
async def test_vote_weighted_by_probability() -> None:
    cs = cands(["51", "52", "52"], means=[math.log(0.9), math.log(0.3), math.log(0.3)])
    scores = await MajorityVote(extract="number", weight="prob").score(REQUEST, cs)
    assert [s.value for s in scores] == pytest.approx([0.6, 0.4, 0.4])
    assert scores[0].details["weight"] == "prob"


@pytest.mark.asyncio
async def test_vote_weighted_by_sequence_probability() -> None:
    # cumulative = 4 * mean: weights 0.9**4 and 0.3**4
    cs = cands(["51", "52"], means=[math.log(0.9), math.log(0.3)])
    scores = await MajorityVote(extract="number", weight="seq_prob").score(REQUEST, cs)
    a, b = 0.9**4, 0.3**4
    assert [s.value for s in scores] == pytest.approx([a / (a + b), b / (a + b)])


@pytest.mark.asyncio
async def test_weighted_vote_without_logprobs_falls_back_to_uniform() -> None:
    cs = cands(["51", "52"], means=[math.log(0.9), None])
    scores = await MajorityVote(extract="number", weight="prob").score(REQUEST, cs)
    assert [s.value for s in scores] == [0.5, 0.5]
    assert scores[0].details["weight"].startswith("uniform")


@pytest.mark.asyncio
async def test_choice_vote_and_custom_normaliser() -> None:
    cs = cands(["The answer is (b)", "B) yes", "(C)"])
    scores = await MajorityVote(extract="choice").score(REQUEST, cs)
    assert [s.value for s in scores] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    lower = MajorityVote(extract="text", normalize=str.lower)
    assert lower.answer("YES!") == "yes!"


def test_bad_vote_settings() -> None:
    with pytest.raises(ConfigError, match="weight"):
        MajorityVote(weight="softmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="extract"):
        MajorityVote(extract="digits")


@pytest.mark.asyncio
async def test_ranker_groups_answers_by_vote_share() -> None:
    cs = cands(["51", "so 51.", "52", "fifty"], means=[-1.0, -0.5, -0.1, -2.0])
    ranker = Ranker([MajorityVote(extract="number"), MeanLogProb()])
    ranked = await ranker.rank(REQUEST, cs)
    assert [(a.answer, a.confidence, sorted(a.support)) for a in ranked.answers] == [("51", 0.5, [0, 1]), ("52", 0.25, [2])]
    best = ranked.candidates[0]
    assert best.index in (0, 1)
    assert best.scores["vote"] == 0.5
    assert math.isclose(sum(c.confidence or 0 for c in ranked.candidates), 1.0)


@pytest.mark.asyncio
async def test_ranker_without_vote_sums_confidences_by_text() -> None:
    cs = cands(["Paris", "paris.", "Rome"], means=[-1.0, -1.0, -1.0])
    ranked = await Ranker([MeanLogProb()]).rank(REQUEST, cs)
    assert [(a.answer, round(a.confidence, 6), a.support) for a in ranked.answers] == [
        ("paris", round(2 / 3, 6), [0, 1]),
        ("rome", round(1 / 3, 6), [2]),
    ]


@pytest.mark.asyncio
async def test_failing_vote_falls_back_to_text_grouping() -> None:
    def broken(text: str) -> str | None:
        raise RuntimeError("boom")

    cs = cands(["a", "a", "b"], means=[-1.0, -1.0, -1.0])
    ranked = await Ranker([MajorityVote(extract=broken), MeanLogProb()]).rank(REQUEST, cs)
    assert any("vote failed" in w for w in ranked.warnings)
    assert [a.answer for a in ranked.answers] == ["a", "b"]


@pytest.mark.asyncio
async def test_orchestrator_result_answers_from_vote() -> None:
    engine = ScriptedEngine()
    for text in ["17*3 = 51", "It is 51.", "\\boxed{51}", "I think 50"]:
        engine.enqueue(text)
    async with Orchestrator(engine) as orch:
        result = await orch.generate("What is 17 * 3?", n=4, rerankers=[MajorityVote()])
    assert result.answers[0].answer == "51"
    assert result.answers[0].confidence == 0.75
    assert result.best is not None and result.best.scores["vote"] == 0.75


@pytest.mark.parametrize(
    ("spec", "name", "weight"),
    [
        ("vote", "vote", 1.0),
        ("vote:number=2", "vote", 2.0),
        ("vote:boxed", "vote", 1.0),
        ("vote:json:answer=0.5", "vote", 0.5),
        ("logprob", "mean_logprob", 1.0),
        ("sumlogprob", "sum_logprob", 1.0),
        ("ppl=3", "perplexity", 3.0),
    ],
)
def test_cli_short_forms(spec: str, name: str, weight: float) -> None:
    reranker, w = parse_spec(spec)
    assert (reranker.name, w) == (name, weight)


def test_cli_vote_extractor_is_used() -> None:
    reranker, _ = parse_spec("vote:choice")
    assert isinstance(reranker, MajorityVote)
    assert reranker.answer("the answer is (c)") == "c"


@pytest.mark.parametrize("spec", ["vote:digits", "nope", "vote=abc", "vote=-1"])
def test_cli_bad_short_forms(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)
