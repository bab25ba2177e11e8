"""Temperature calibration: exact optimum on a tiny case, recovery on a synthetic set, errors."""

from __future__ import annotations

import math
import random

import pytest

from nbest.errors import ConfigError
from nbest.rerankers import MeanLogProb, Ranker, softmax
from nbest.rerankers.calibrate import Example, calibrate, fit_temperature, log_loss
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams


def test_log_loss_exact() -> None:
    assert log_loss([Example([0.0, math.log(3)], {1})]) == pytest.approx(-math.log(0.75))
    # two correct candidates: their probabilities add up
    assert log_loss([Example([0.0, 0.0, 0.0], {0, 2})]) == pytest.approx(-math.log(2 / 3))
    assert log_loss([Example([1.0, 0.0], {0})], temperature=0.5) == pytest.approx(-math.log(softmax([2.0, 0.0])[0]))


def test_fit_matches_closed_form() -> None:
    # the top candidate is right 3 times out of 4: the optimum gives it probability 3/4
    examples = [Example([1.0, 0.0], {0})] * 3 + [Example([1.0, 0.0], {1})]
    fit = fit_temperature(examples)
    assert fit.temperature == pytest.approx(1 / math.log(3), rel=1e-4)
    assert fit.examples == 4


def synthetic(seed: int, n_requests: int, scale: float) -> list[Example]:
    """True logits drawn at random, the correct candidate sampled from their softmax; the
    ranker reports the logits multiplied by ``scale`` (over-confident when scale > 1)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n_requests):
        logits = [rng.gauss(0, 1) for _ in range(6)]
        probs = softmax(logits)
        correct = rng.choices(range(6), weights=probs)[0]
        examples.append(Example([scale * v for v in logits], {correct}))
    return examples


@pytest.mark.parametrize("scale", [0.2, 5.0])
def test_fit_improves_log_loss_and_recovers_the_scale(scale: float) -> None:
    examples = synthetic(0, 3000, scale)
    fit = fit_temperature(examples)
    assert fit.log_loss_after < fit.log_loss_before - 0.05
    assert fit.temperature == pytest.approx(scale, rel=0.15)
    held_out = synthetic(1, 1000, scale)
    assert log_loss(held_out, fit.temperature) < log_loss(held_out, 1.0)


def test_examples_without_a_correct_candidate_are_skipped() -> None:
    fit = fit_temperature([Example([1.0, 0.0], {0}), Example([1.0, 0.0], set())])
    assert fit.examples == 1


@pytest.mark.parametrize(
    ("examples", "kwargs", "match"),
    [
        ([], {}, "examples"),
        ([Example([1.0, 0.0], set())], {}, "examples"),
        ([Example([1.0, 0.0], {2})], {}, "correct"),
        ([Example([math.inf, 0.0], {0})], {}, "finite"),
        ([Example([1.0, 0.0], {0})], {"bounds": (1.0, 0.5)}, "bounds"),
    ],
)
def test_bad_input(examples: list[Example], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fit_temperature(examples, **kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_calibrate_runs_the_ranker() -> None:
    rng = random.Random(3)
    labelled = []
    for r in range(200):
        logits = [rng.gauss(0, 1) for _ in range(4)]
        correct = rng.choices(range(4), weights=softmax(logits))[0]
        cands = [
            Candidate(
                index=i, spec=CandidateSpec(index=i, params=SamplingParams()), text=f"t{i}", mean_logprob=4 * v, num_tokens=1
            )
            for i, v in enumerate(logits)
        ]
        labelled.append((Request(prompt=f"q{r}"), cands, {correct}))
    fit = await calibrate(Ranker([MeanLogProb()]), labelled)
    assert fit.examples == 200
    assert fit.log_loss_after < fit.log_loss_before
    assert 2.0 < fit.temperature < 8.0
    calibrated = Ranker([MeanLogProb()], temperature=fit.temperature)
    ranked = await calibrated.rank(*labelled[0][:2])
    assert sum(c.confidence or 0 for c in ranked.candidates) == pytest.approx(1.0)
