"""Candidate features as rerankers: values, short forms, configs, client safety, signed coefficients."""

from __future__ import annotations

import anyio
import pytest

from nbest.errors import ConfigError
from nbest.rerankers import FeatureConfig, FeatureReranker, RankerConfig, build_ranker, reranker_config
from nbest.rerankers.features import answer_keys, feature_meaning, feature_values
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams


def cands() -> list[Candidate]:
    rows = [  # text, tokens, finish, temperature, engine
        ("Paris.", 2, "stop", 0.3, "small"),
        ("paris", 1, "stop", 0.7, "big"),
        ("It is Lyon, I think, but the answer goes on and on", 12, "length", 1.2, "big"),
        ("", 0, "stop", 0.7, "small"),
    ]
    return [
        Candidate(
            index=i, text=t, num_tokens=n, finish_reason=f,
            spec=CandidateSpec(index=i, engine=e, params=SamplingParams(temperature=temp)),
        )
        for i, (t, n, f, temp, e) in enumerate(rows)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("tokens", [2.0, 1.0, 12.0, 0.0]),
        ("share", [0.5, 0.5, 0.25, 0.0]),  # "Paris." and "paris" are one answer; an empty text is none
        ("temperature", [0.3, 0.7, 1.2, 0.7]),
        ("length_stop", [0.0, 0.0, 1.0, 0.0]),
        ("model=big", [0.0, 1.0, 1.0, 0.0]),
        ("model=other", [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_feature_values(name: str, values: list[float]) -> None:
    assert feature_values(name, cands()) == values
    scored = anyio.run(FeatureReranker(name, coef=-2.0).score, Request(prompt="?"), cands())
    assert [s.value for s in scored] == [-2.0 * v for v in values]


def test_share_is_the_vote_share_of_the_answer() -> None:
    spec = CandidateSpec(index=0, params=SamplingParams())
    texts = ["So 17 * 3 = 51.", "51", "It is 51.0", "52", "I do not know", ""]
    candidates = [Candidate(index=i, text=t, spec=spec) for i, t in enumerate(texts)]
    assert [round(v, 3) for v in feature_values("share", candidates)] == [0.5, 0.5, 0.5, 0.167, 0.167, 0.0]


def test_share_counts_answers_by_meaning_as_the_vote_does() -> None:
    """Two phrasings of Tokyo are one answer (the vote's span clusters against the question),
    so the share a learned ranker weighs is the vote's: Tokyo 2 of 4."""
    from nbest.rerankers.vote import MajorityVote

    spec = CandidateSpec(index=0, params=SamplingParams())
    texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto.", "Osaka"]
    candidates = [Candidate(index=i, text=t, spec=spec) for i, t in enumerate(texts)]
    request = Request(prompt="What is the capital of Japan?")
    scored = anyio.run(FeatureReranker("share").score, request, candidates)
    assert [s.value for s in scored] == [0.5, 0.5, 0.25, 0.25]
    votes = anyio.run(MajorityVote().score, request, candidates)
    assert [s.value for s in scored] == [v.value for v in votes]
    assert answer_keys(candidates, "What is the capital of Japan?") == [v.details["answer"] for v in votes]


@pytest.mark.parametrize(
    ("spec", "dump"),
    [
        ("feature:tokens", {"kind": "feature", "weight": 1.0, "feature": "tokens", "coef": 1.0}),
        ("feature:share=0.5", {"kind": "feature", "weight": 0.5, "feature": "share", "coef": 1.0}),
        ("feature:model=big", {"kind": "feature", "weight": 1.0, "feature": "model=big", "coef": 1.0}),
        ("feature:model=big=2", {"kind": "feature", "weight": 2.0, "feature": "model=big", "coef": 1.0}),
        (
            {"kind": "feature", "feature": "tokens", "coef": -1},
            {"kind": "feature", "weight": 1.0, "feature": "tokens", "coef": -1.0},
        ),
    ],
)
def test_short_forms_and_configs_round_trip(spec: str | dict[str, object], dump: dict[str, object]) -> None:
    config = reranker_config(spec)
    assert isinstance(config, FeatureConfig) and config.model_dump() == dump
    assert reranker_config(config.model_dump()) == config
    rebuilt = config.build()
    assert rebuilt.name == config.reranker_name() == f"feature:{dump['feature']}"
    assert rebuilt.to_config().model_dump(exclude={"weight"}) == config.model_dump(exclude={"weight"})


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("feature", "name one, as feature:NAME"),
        ("feature:colour", "unknown feature 'colour'"),
        ("feature:model", "unknown feature 'model'"),
        ("feature:tokens=x", "weight must be a number"),
        ({"kind": "feature", "feature": "model="}, "model=ID needs an engine/model id"),
        ({"kind": "feature", "feature": "model=a\nb"}, "printable"),
        ({"kind": "feature", "feature": "tokens", "coef": float("nan")}, "coef"),
        ({"kind": "feature", "feature": "tokens", "weight": -1}, "weight"),
    ],
)
def test_bad_features_are_named(spec: str | dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        reranker_config(spec)


def test_features_are_offered_to_clients_and_rank_short_answers_first() -> None:
    ranker = build_ranker(["feature:share", {"kind": "feature", "feature": "tokens", "coef": -1}], for_client=True)
    ranked = anyio.run(ranker.rank, Request(prompt="?"), cands())
    assert [c.index for c in ranked.candidates] == [1, 0, 3, 2]  # the shared short answer, the empty one, the long one
    config = RankerConfig.of(ranker)
    assert config is not None and RankerConfig.parse(config.model_dump(mode="json")) == config


@pytest.mark.parametrize(
    ("name", "weight", "text"),
    [
        ("tokens", None, "length of the answer in tokens"),
        ("tokens", 0.3, "length of the answer in tokens; this weight prefers longer answers"),
        ("share", 1.0, "share of the candidates that give the same answer; this weight prefers answers more candidates agree on"),
        ("length_stop", -0.2, "1 when the answer was cut off at max_tokens; this weight prefers answers that finished"),
        (
            "model=big",
            0.5,
            "1 when the candidate comes from this engine/model (big); this weight prefers this model's candidates",
        ),
        ("temperature", -1.0, "sampling temperature of the candidate; this weight prefers candidates sampled cooler"),
    ],
)
def test_each_feature_says_what_it_means(name: str, weight: float | None, text: str) -> None:
    assert feature_meaning(name, weight) == text
