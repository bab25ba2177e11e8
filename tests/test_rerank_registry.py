"""The reranker registry: every kind round-trips, short forms and configs agree, client safety per config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbest.errors import ConfigError
from nbest.rerankers import (
    MBR,
    RERANKERS,
    EmbeddingConsensus,
    MajorityVote,
    MeanLogProb,
    RankerConfig,
    build_ranker,
    config_for_name,
    reranker_config,
)
from nbest.rerankers.extract import get_extractor
from tests.scripted import ScriptedEngine

BUILT_IN = ["arithmetic", "cross", "embed", "feature", "judge", "logprob", "mbr", "ppl", "reward", "source", "sumlogprob", "vote"]


def test_the_built_in_kinds() -> None:
    assert sorted(RERANKERS.kinds()) == BUILT_IN


@pytest.mark.parametrize(
    ("short", "config"),
    [
        ("logprob", {"kind": "logprob", "weight": 1.0}),
        ("mean_logprob=0.5", {"kind": "logprob", "weight": 0.5}),
        ("perplexity", {"kind": "ppl", "weight": 1.0}),
        ("vote:number=2", {"kind": "vote", "weight": 2.0, "extract": "number", "votes": "uniform"}),
        ("vote:json:answer", {"kind": "vote", "weight": 1.0, "extract": "json:answer", "votes": "uniform"}),
        ("mbr:bleu:aggregate", {"kind": "mbr", "weight": 1.0, "utility": "bleu", "method": "aggregate", "model": None}),
        ("embed", {"kind": "embed", "weight": 1.0, "model": None}),
        ("source:some/model", {"kind": "source", "weight": 1.0, "model": "some/model"}),
        (
            "judge:Grade the maths.",
            {"kind": "judge", "weight": 1.0, "rubric": "Grade the maths.", "top_logprobs": 20, "max_tokens": 4, "chat": True},
        ),
    ],
)
def test_short_forms_are_configs_that_round_trip(short: str, config: dict[str, object]) -> None:
    parsed = reranker_config(short)
    assert parsed.model_dump() == config
    assert reranker_config(config) == parsed
    assert reranker_config(json.dumps(config)) == parsed


@pytest.mark.parametrize(
    ("spec", "safe"),
    [
        ("logprob", True), ("ppl", True), ("sumlogprob", True), ("vote:number", True), ("mbr:chrf", True),
        ("mbr:embedding", True), ("embed", True),
        ("vote:regex:(a|a)*b", False),  # a client's pattern can backtrack for hours
        ("mbr:embedding:exact", True), ({"kind": "mbr", "utility": "embedding", "model": "/srv/m"}, False),
        ("embed:/srv/model", False), ("source", False), ("cross:m", False), ("reward:m", False), ("judge", False),
    ],
)  # fmt: skip
def test_client_safety_is_a_property_of_each_config(spec: str, safe: bool) -> None:
    assert reranker_config(spec).safe_for_clients() is safe


def test_for_client_refuses_unsafe_configs_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rerankers\[1\]: reranker 'embed' with these options is not offered"):
        build_ranker(["vote", "embed:/srv/model"], for_client=True)
    path = tmp_path / "vote.json"
    path.write_text('{"kind": "vote"}')
    assert build_ranker([f"@{path}"]).rerankers[0].name == "vote"
    with pytest.raises(ConfigError, match="not read over HTTP"):
        build_ranker([f"@{path}"], for_client=True)


def test_the_cache_builds_each_canonical_config_once() -> None:
    cache: dict[str, object] = {}
    a = build_ranker(["vote:number=2", "logprob"], cache=cache)  # type: ignore[arg-type]
    b = build_ranker([{"kind": "vote", "extract": "number", "weight": 0.1}], cache=cache)  # type: ignore[arg-type]
    assert len(cache) == 2 and b.rerankers[0] is a.rerankers[0] and b.weights == [0.1]


def test_built_in_rerankers_give_their_config_back() -> None:
    assert MajorityVote(extract="boxed", weight="prob").to_config().model_dump() == {
        "kind": "vote", "weight": 1.0, "extract": "boxed", "votes": "prob",
    }  # fmt: skip
    assert MBR("bleu", method="aggregate").to_config() == reranker_config("mbr:bleu:aggregate")
    assert EmbeddingConsensus().to_config() == reranker_config("embed")
    assert MeanLogProb().to_config() == reranker_config("logprob")
    with pytest.raises(ConfigError, match="callable"):
        MajorityVote(extract=get_extractor("number")).to_config()
    assert RankerConfig.of(build_ranker(["vote:number=2", "logprob"])) is not None


def test_the_judge_is_built_on_the_engine_it_is_handed() -> None:
    with pytest.raises(ConfigError, match="judge: needs an engine"):
        build_ranker(["judge"])
    engine = ScriptedEngine()
    judge = build_ranker(["judge:Be strict."], engine=engine).rerankers[0]
    assert judge.engine is engine and judge.rubric == "Be strict."  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("mean_logprob", "logprob"), ("sum_logprob", "sumlogprob"), ("perplexity", "ppl"), ("vote", "vote"),
     ("mbr_chrf", "mbr"), ("embed", "embed"), ("source_sim", "source"), ("judge", "judge"), ("cross_encoder", None),
     ("nope", None)],
)  # fmt: skip
def test_config_for_name(name: str, kind: str | None) -> None:
    config = config_for_name(name)
    assert (config.kind if config else None) == kind
    if config is not None:
        assert config.reranker_name() == name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown reranker 'nope'; use arithmetic, cross:MODEL, embed"),
        ("vote=abc", "weight must be a number"),
        ("vote=-1", "weight: Input should be greater than or equal to 0"),
        ("vote:digits", "extract"),
        ("cross", "name the model"),
        ("mbr:meteor", "utility: Input should be"),
        ('{"kind": "vote", "extractor": "x"}', "extractor: Extra inputs are not permitted"),
        ("logprob:x", "logprob takes no argument"),
    ],
)
def test_bad_specs_are_one_line_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        reranker_config(spec)
    assert "\n" not in str(info.value)
