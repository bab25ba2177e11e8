"""Majority vote: shares, weighting, answer grouping in the ranker and the Result."""

from __future__ import annotations

import math

import pytest

from nbest import Orchestrator
from nbest.errors import ConfigError
from nbest.rerankers import MajorityVote, MeanLogProb, Ranker, build_ranker, parse_spec, reranker_config
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


# -- confidence-weighted votes. Five candidates, signal mean_logprob = log(p) with
# p = 0.4, 0.1, 0.1, 0.3, 0.1 (sum 1): answers 51, 52, 52, 51, 53. Plain votes tie 51 and 52 (2:2:1).
WEIGHTED = ["51", "52", "52", "51", "53"]
PROBS = [0.4, 0.1, 0.1, 0.3, 0.1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "shares"),
    [
        ({}, {"51": 2 / 5, "52": 2 / 5, "53": 1 / 5}),
        # softmax(log p / 1) = p: 0.4 + 0.3, 0.1 + 0.1, 0.1
        ({"weight": "cisc"}, {"51": 0.7, "52": 0.2, "53": 0.1}),
        # softmax(log p / 0.5) ∝ p²: 0.16 + 0.09, 0.01 + 0.01, 0.01 over 0.28
        ({"weight": "cisc", "temperature": 0.5}, {"51": 25 / 28, "52": 2 / 28, "53": 1 / 28}),
        # keep ceil(0.4 * 5) = 2: candidates 0 and 3 (both 51)
        ({"weight": "filter", "keep": 0.4}, {"51": 1.0, "52": 0.0, "53": 0.0}),
        # keep 3: 0, 3, then the tie at 0.1 goes to plan order (candidate 1)
        ({"weight": "filter", "keep": 0.6}, {"51": 2 / 3, "52": 1 / 3, "53": 0.0}),
        # default keep 0.5: ceil(2.5) = 3
        ({"weight": "filter"}, {"51": 2 / 3, "52": 1 / 3, "53": 0.0}),
        # ranks 1 (c0), 2 (c3), and c1, c2, c4 tied at ranks 3..5 share rank 4:
        # weights N - r + 1 = 5, 2, 2, 4, 2 (sum 15)
        ({"weight": "borda"}, {"51": 9 / 15, "52": 4 / 15, "53": 2 / 15}),
        # squared: 25, 4, 4, 16, 4 (sum 53)
        ({"weight": "borda", "power": 2.0}, {"51": 41 / 53, "52": 8 / 53, "53": 4 / 53}),
        ({"weight": "borda", "power": 0.0}, {"51": 2 / 5, "52": 2 / 5, "53": 1 / 5}),  # power 0: plain votes
    ],
)
async def test_confidence_weighted_vote_tables(options: dict[str, object], shares: dict[str, float]) -> None:
    cs = cands(WEIGHTED, means=[math.log(p) for p in PROBS])
    scores = await MajorityVote(extract="number", **options).score(REQUEST, cs)  # type: ignore[arg-type]
    assert [s.value for s in scores] == pytest.approx([shares[a] for a in WEIGHTED])
    assert [s.details["votes"] for s in scores] == [2, 2, 2, 2, 1]  # counts stay counts
    if options:
        assert scores[0].details["weight"] == f"{options['weight']}:mean_logprob"
        assert math.isclose(sum(s.details["vote_weight"] for s in scores), 1.0)


def with_alternatives(texts: list[str], confidences: list[float]) -> list[Candidate]:
    """Candidates whose every token has two alternatives at -c ± 0.5: token confidence c."""
    out = []
    for i, (t, c) in enumerate(zip(texts, confidences, strict=True)):
        alternatives = [{"x": -c + 0.5, "y": -c - 0.5}] * 3
        out.append(
            Candidate(
                index=i,
                spec=CandidateSpec(index=i, params=SamplingParams(top_logprobs=2)),
                text=t,
                num_tokens=3,
                token_logprobs=[-c + 0.5] * 3,
                top_logprobs=alternatives,
            )
        )
    return out


@pytest.mark.asyncio
async def test_weighted_vote_reads_the_chosen_signal() -> None:
    # tail confidence 3, 1, 1, 2: ranks 1, 3.5, 3.5, 2 (the tie shares ranks 3 and 4),
    # Borda weights N - r + 1 = 4, 1.5, 1.5, 3 (sum 10): 7 gets 0.4, 8 gets 0.3, 9 gets 0.3
    cs = with_alternatives(["7", "8", "8", "9"], [3.0, 1.0, 1.0, 2.0])
    scores = await MajorityVote(extract="number", weight="borda", signal="tail").score(REQUEST, cs)
    assert [s.value for s in scores] == pytest.approx([0.4, 0.3, 0.3, 0.3])
    assert [s.details["vote_weight"] for s in scores] == pytest.approx([0.4, 0.15, 0.15, 0.3])
    assert scores[0].details["weight"] == "borda:tail"
    filtered = await MajorityVote(extract="number", weight="filter", signal="mean_confidence", keep=0.25).score(REQUEST, cs)
    assert [s.value for s in filtered] == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.asyncio
async def test_weighted_vote_without_the_signal_falls_back_to_uniform() -> None:
    cs = cands(["51", "52"], means=[math.log(0.9), math.log(0.1)])  # no top_logprobs: no tail signal
    scores = await MajorityVote(extract="number", weight="cisc", signal="tail").score(REQUEST, cs)
    assert [s.value for s in scores] == [0.5, 0.5]
    assert scores[0].details["weight"] == "uniform (missing tail)"


@pytest.mark.asyncio
async def test_weighted_support_is_the_answers_confidence() -> None:
    cs = cands(WEIGHTED, means=[math.log(p) for p in PROBS])
    ranked = await Ranker([MajorityVote(extract="number", weight="cisc")]).rank(REQUEST, cs)
    assert [(a.answer, round(a.confidence, 9), sorted(a.support)) for a in ranked.answers] == [
        ("51", 0.7, [0, 3]),
        ("52", 0.2, [1, 2]),
        ("53", 0.1, [4]),
    ]


@pytest.mark.asyncio
async def test_prepared_signals_are_reused() -> None:
    vote = MajorityVote(extract="number", weight="cisc")
    cs = cands(WEIGHTED, means=[math.log(p) for p in PROBS])
    for c in cs:
        await vote.prepare(REQUEST, c)
    scores = await vote.score(REQUEST, cs)
    assert scores[0].value == pytest.approx(0.7)
    vote.release(REQUEST)


@pytest.mark.parametrize(
    ("spec", "config"),
    [
        ("vote:cisc", {"votes": "cisc", "extract": "auto"}),
        ("vote:cisc:number", {"votes": "cisc", "extract": "number"}),
        ("vote:filter@tail:boxed=2", {"votes": "filter", "signal": "tail", "extract": "boxed", "weight": 2.0}),
        ("vote:borda@self_certainty", {"votes": "borda", "signal": "self_certainty"}),
        ("vote:prob:json:answer", {"votes": "prob", "extract": "json:answer"}),
        ("vote:Borda", {"votes": "borda"}),
        ("vote:number", {"votes": "uniform", "extract": "number"}),  # extractor forms unchanged
        ("vote:regex:cisc(\\d+)", {"votes": "uniform", "extract": "regex:cisc(\\d+)"}),
    ],
)
def test_weighted_vote_short_forms(spec: str, config: dict[str, object]) -> None:
    cfg = reranker_config(spec)
    dumped = cfg.model_dump()
    assert {k: dumped.get(k) for k in config} == config
    assert reranker_config(dumped) == cfg
    vote = cfg.build()
    assert isinstance(vote, MajorityVote) and vote.to_config() == cfg.model_copy(update={"weight": 1.0})


def test_plain_vote_config_dumps_as_before() -> None:
    assert reranker_config("vote:number").model_dump() == {"kind": "vote", "weight": 1.0, "extract": "number", "votes": "uniform"}
    assert repr(reranker_config("vote")) == "VoteConfig(kind='vote', weight=1.0, extract='auto', votes='uniform')"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("vote:cisc@confidence", "signal"),
        ("vote:cisc@", "signal"),
        ("vote:uniform@tail", "signal: only read by the votes cisc, filter and borda"),
        ({"kind": "vote", "votes": "cisc", "temperature": 0}, "temperature"),
        ({"kind": "vote", "votes": "cisc", "temperature": -1}, "temperature"),
        ({"kind": "vote", "votes": "filter", "keep": 0}, "keep"),
        ({"kind": "vote", "votes": "filter", "keep": 1.5}, "keep"),
        ({"kind": "vote", "votes": "borda", "power": 17}, "power"),
        ({"kind": "vote", "votes": "borda", "power": -1}, "power"),
        ({"kind": "vote", "votes": "cisc", "keep": 0.5}, "keep: only read by votes=filter"),
        ({"kind": "vote", "temperature": 0.5}, "temperature: only read by votes=cisc"),
        ({"kind": "vote", "votes": "softmax"}, "votes"),
    ],
)
def test_bad_weighted_vote_settings(spec: str | dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reranker_config(spec)


def test_bad_weighted_vote_arguments() -> None:
    with pytest.raises(ConfigError, match="signal"):
        MajorityVote(weight="cisc", signal="nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="temperature"):
        MajorityVote(weight="cisc", temperature=math.inf)
    with pytest.raises(ConfigError, match="keep"):
        MajorityVote(weight="borda", keep=0.5)


def test_weighted_votes_are_offered_to_clients() -> None:
    for spec in ["vote:cisc@tail:number", {"kind": "vote", "votes": "borda", "power": 0.5}]:
        assert build_ranker([spec], for_client=True).rerankers[0].name == "vote"
