"""Log-probability rerankers: exact values, length normalisation, missing data."""

from __future__ import annotations

import math

import pytest

from nbest.rerankers import MeanLogProb, Perplexity, SumLogProb
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams

REQUEST = Request(prompt="q")


def cand(
    index: int, *, tokens: int = 0, cum: float | None = None, mean: float | None = None, token_logprobs: list[float] | None = None
) -> Candidate:
    spec = CandidateSpec(index=index, params=SamplingParams())
    return Candidate(
        index=index,
        spec=spec,
        text=f"c{index}",
        num_tokens=tokens,
        cumulative_logprob=cum,
        mean_logprob=mean,
        token_logprobs=token_logprobs,
    )


@pytest.mark.asyncio
async def test_sum_logprob_prefers_short_mean_logprob_does_not() -> None:
    short = cand(0, tokens=2, cum=-1.0, mean=-0.5)
    long = cand(1, tokens=10, cum=-3.0, mean=-0.3)
    sums = [s.value for s in await SumLogProb().score(REQUEST, [short, long])]
    means = [s.value for s in await MeanLogProb().score(REQUEST, [short, long])]
    assert sums == [-1.0, -3.0]
    assert means == [-0.5, -0.3]


@pytest.mark.asyncio
async def test_perplexity_is_negative_exp_of_mean() -> None:
    c = cand(0, tokens=4, cum=-4 * math.log(2), mean=-math.log(2))
    [score] = await Perplexity().score(REQUEST, [c])
    assert score.value == pytest.approx(-2.0)
    assert score.details["perplexity"] == pytest.approx(2.0)


@pytest.mark.asyncio
async def test_fallbacks_from_token_logprobs() -> None:
    c = cand(0, tokens=3, token_logprobs=[-0.1, -0.2, -0.3])
    assert (await SumLogProb().score(REQUEST, [c]))[0].value == pytest.approx(-0.6)
    assert (await MeanLogProb().score(REQUEST, [c]))[0].value == pytest.approx(-0.2)
    assert (await Perplexity().score(REQUEST, [c]))[0].value == pytest.approx(-math.exp(0.2))


@pytest.mark.asyncio
@pytest.mark.parametrize("reranker", [SumLogProb(), MeanLogProb(), Perplexity()])
async def test_missing_logprobs_score_none_in_order(reranker: SumLogProb | MeanLogProb | Perplexity) -> None:
    cs = [cand(0), cand(1, tokens=2, cum=-1.0, mean=-0.5), cand(2)]
    values = [s.value for s in await reranker.score(REQUEST, cs)]
    assert values[0] is None and values[2] is None
    assert values[1] is not None
