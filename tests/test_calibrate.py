"""Temperature calibration: exact optimum on a tiny case, recovery on a synthetic set, errors;
AUROC and prediction-rejection ratio of a confidence, by hand."""

from __future__ import annotations

import math
import random

import pytest

from nbest.errors import ConfigError
from nbest.metrics.calibration import auroc, prediction_rejection_ratio
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


# (confidences, right?, AUROC, PRR), worked out by hand.
# Row 1: right {0.9, 0.3}, wrong {0.8, 0.2}: pairs won 0.9>0.8, 0.9>0.2, 0.3>0.2 of 4 -> 3/4.
#   Rejecting the least confident 0, 1, 2, 3 keeps accuracies 2/4, 2/3, 1/2, 1/1 (mean 2/3); random keeps 1/2;
#   the oracle (wrong ones first) 2/4, 2/3, 1, 1 (mean 19/24): PRR = (2/3 - 1/2) / (19/24 - 1/2) = 4/7.
# Row 3: a tie between a right and a wrong answer counts half; rejecting them in random order:
#   ascending 0.1✗, {0.5✓, 0.5✗}, 0.9✓: kept 2/4, 2/3, (2 - 1/2)/2 = 3/4, 1 (mean 35/48); oracle 2/4, 2/3, 1, 1
#   (mean 38/48); PRR = (35/48 - 24/48) / (38/48 - 24/48) = 11/14. AUROC: 0.9 beats both wrong, 0.5 beats 0.1 and ties 0.5.
DISCRIMINATION = [
    ([0.9, 0.8, 0.3, 0.2], [True, False, True, False], 0.75, 4 / 7),
    ([0.2, 0.9], [False, True], 1.0, 1.0),  # perfect
    ([0.9, 0.5, 0.5, 0.1], [True, True, False, False], (2 + 1.5) / 4, 11 / 14),
    ([0.9, 0.1], [False, True], 0.0, -1.0),  # exactly backwards
    ([0.7, 0.7, 0.7], [True, False, True], 0.5, 0.0),  # a constant confidence tells nothing
    ([0.9, 0.1], [True, True], None, None),  # all right: undefined
    ([0.9, 0.1], [False, False], None, None),  # all wrong: undefined
    ([], [], None, None),
]


@pytest.mark.parametrize(("confidences", "correct", "area", "prr"), DISCRIMINATION)
def test_auroc_and_prediction_rejection_ratio_by_hand(
    confidences: list[float], correct: list[bool], area: float | None, prr: float | None
) -> None:
    assert auroc(confidences, correct) == (None if area is None else pytest.approx(area, abs=1e-12))
    assert prediction_rejection_ratio(confidences, correct) == (None if prr is None else pytest.approx(prr, abs=1e-12))
    if prr == 0.0:
        assert str(prediction_rejection_ratio(confidences, correct)) == "0.0"  # not -0.0


def test_discrimination_ignores_order_and_scale() -> None:
    rng = random.Random(5)
    confs = [rng.random() for _ in range(50)]
    right = [rng.random() < c for c in confs]
    shuffled = list(zip(confs, right, strict=True))
    rng.shuffle(shuffled)
    for measure in (auroc, prediction_rejection_ratio):
        value = measure(confs, right)
        assert value is not None and 0 < value <= 1  # confidences that track the outcomes
        assert measure([c for c, _ in shuffled], [r for _, r in shuffled]) == pytest.approx(value)
        assert measure([c**3 for c in confs], right) == pytest.approx(value)  # only the order counts


def test_discrimination_needs_as_many_outcomes_as_confidences() -> None:
    with pytest.raises(ValueError, match="2 confidences for 1 outcomes"):
        auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="2 confidences for 1 outcomes"):
        prediction_rejection_ratio([0.1, 0.2], [True])
