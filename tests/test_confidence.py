"""Ranking and confidence math, checked by hand."""

from __future__ import annotations

import math

import pytest

from nbest import ConfigError
from nbest.rerankers import MeanLogProb, Ranker, softmax
from nbest.rerankers.ranker import normalize
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams, Score

pytestmark_async = pytest.mark.asyncio(loop_scope="session")


def cand(index: int, text: str, mean: float | None, error: str | None = None) -> Candidate:
    return Candidate(
        index=index, text=text, mean_logprob=mean, spec=CandidateSpec(index=index, params=SamplingParams()), error=error
    )


@pytest.mark.parametrize(
    ("values", "temperature", "expected"),
    [
        ([0.0, 0.0], 1.0, [0.5, 0.5]),
        ([0.0, math.log(3)], 1.0, [0.25, 0.75]),
        ([0.0, math.log(3)], 0.5, [0.1, 0.9]),
        ([1000.0, 1000.0, 1000.0], 1.0, [1 / 3] * 3),  # no overflow
        ([-2.0], 1.0, [1.0]),
        ([], 1.0, []),
    ],
)
def test_softmax(values: list[float], temperature: float, expected: list[float]) -> None:
    assert softmax(values, temperature) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "method", "expected"),
    [
        ([1.0, 2.0, 3.0], "zscore", [-math.sqrt(1.5), 0.0, math.sqrt(1.5)]),
        ([2.0, 2.0], "zscore", [0.0, 0.0]),
        ([1.0, 3.0, 2.0], "minmax", [0.0, 1.0, 0.5]),
        ([5.0, None, 7.0], "minmax", [0.0, 0.0, 1.0]),
        ([1.0, 3.0, 3.0, 0.0], "rank", [1 / 3, 5 / 6, 5 / 6, 0.0]),
        ([-1.0, None], "none", [-1.0, -1.0]),
        ([None, None], "zscore", [0.0, 0.0]),
    ],
)
def test_normalize(values: list[float | None], method: str, expected: list[float]) -> None:
    assert normalize(values, method) == pytest.approx(expected)  # type: ignore[arg-type]


@pytestmark_async
async def test_single_reranker_confidence_is_softmax_of_raw_scores() -> None:
    cands = [cand(0, "a", -1.0), cand(1, "b", -1.0 + math.log(3)), cand(2, "c", None, error="boom")]
    ranked = await Ranker([MeanLogProb()]).rank(Request(prompt="q"), cands)
    assert [c.index for c in ranked.candidates] == [1, 0, 2]
    assert [c.confidence for c in ranked.candidates[:2]] == pytest.approx([0.75, 0.25])
    assert ranked.candidates[2].rank is None and ranked.candidates[2].confidence is None


class Fixed:
    def __init__(self, name: str, values: list[float | None]) -> None:
        self.name, self.values = name, values

    async def score(self, request: Request, candidates: object) -> list[Score]:
        return [Score(value=v) for v in self.values]


class Broken:
    name = "broken"

    async def score(self, request: Request, candidates: object) -> list[Score]:
        raise RuntimeError("model missing")


@pytestmark_async
async def test_weighted_zscore_combination() -> None:
    cands = [cand(i, t, None) for i, t in enumerate("xyz")]
    ranker = Ranker([Fixed("a", [1.0, 2.0, 3.0]), Fixed("b", [3.0, 2.0, 1.0])], weights=[2.0, 1.0])
    ranked = await ranker.rank(Request(prompt="q"), cands)
    z = math.sqrt(1.5)
    assert [c.index for c in ranked.candidates] == [2, 1, 0]
    assert [c.score for c in ranked.candidates] == pytest.approx([z, 0.0, -z])
    assert ranked.candidates[0].scores == {"a": 3.0, "b": 1.0}


@pytestmark_async
async def test_a_failing_reranker_is_recorded_and_the_rest_still_rank() -> None:
    cands = [cand(0, "x", -2.0), cand(1, "y", -1.0)]
    ranked = await Ranker([MeanLogProb(), Broken()]).rank(Request(prompt="q"), cands)
    assert [c.index for c in ranked.candidates] == [1, 0]
    assert ranked.candidates[0].scores == {"mean_logprob": -1.0, "broken": None}
    assert any("broken failed: RuntimeError: model missing" in w for w in ranked.warnings)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rerankers": []}, "at least one reranker"),
        ({"rerankers": [MeanLogProb()], "weights": [1.0, 2.0]}, "2 weight(s) for 1 reranker(s)"),
        ({"rerankers": [MeanLogProb()], "weights": [0.0]}, "sum to a positive number"),
        ({"rerankers": [MeanLogProb()], "temperature": 0.0}, "temperature"),
        ({"rerankers": [MeanLogProb(), MeanLogProb()]}, "names must be distinct"),
        ({"rerankers": [object()]}, "is not a Reranker"),
    ],
)
def test_ranker_rejects_bad_config(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Ranker(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
