"""Confidence signals of one candidate (DeepConf, self-certainty, mean log-probability), hand-checked."""

from __future__ import annotations

import math
import random

import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.errors import ConfigError
from nbest.rerankers import MajorityVote, build_ranker
from nbest.rerankers.confidence import (
    SIGNALS,
    ConfidenceTracker,
    default_window,
    signals,
    token_confidence,
)
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams


def candidate(
    logprobs: list[float] | None,
    alternatives: list[dict[str, float]] | None = None,
    mean: float | None = None,
    tokens: int | None = None,
) -> Candidate:
    n = tokens if tokens is not None else len(logprobs or alternatives or [])
    return Candidate(
        index=0,
        spec=CandidateSpec(index=0, params=SamplingParams()),
        text="t",
        num_tokens=n,
        token_logprobs=logprobs,
        top_logprobs=alternatives,
        mean_logprob=mean,
    )


def kl_two(d: float) -> float:
    """KL(uniform || q) for two alternatives whose log-probabilities differ by d:
    q = (1, e^-d) / (1 + e^-d), so KL = -log 2 - (log q1 + log q2) / 2 = log(1 + e^-d) + d/2 - log 2."""
    return math.log1p(math.exp(-d)) + d / 2 - math.log(2)


# four tokens, two alternatives each; token confidence = -mean of the alternatives:
# (0.1 + 2.1)/2 = 1.1, (0.2 + 3.8)/2 = 2.0, (1.0 + 1.0)/2 = 1.0, (0.3 + 2.7)/2 = 1.5
LOGPROBS = [-0.1, -0.2, -1.0, -0.3]
ALTERNATIVES = [{"x": -0.1, "y": -2.1}, {"x": -0.2, "y": -3.8}, {"x": -1.0, "y": -1.0}, {"x": -0.3, "y": -2.7}]
SELF_CERTAINTY = (kl_two(2.0) + kl_two(3.6) + kl_two(0.0) + kl_two(2.4)) / 4


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        # window 2: groups (1.1+2.0)/2 = 1.55, (2.0+1.0)/2 = 1.5, (1.0+1.5)/2 = 1.25
        (2, {"mean_confidence": 1.4, "lowest_group": 1.25, "tail": 1.25, "bottom10": 1.25}),
        # window 3: groups 4.1/3, 4.5/3
        (3, {"mean_confidence": 1.4, "lowest_group": 4.1 / 3, "tail": 1.5, "bottom10": 4.1 / 3}),
        # window 1: groups = token confidences; bottom 10 % of 4 groups is the lowest one
        (1, {"mean_confidence": 1.4, "lowest_group": 1.0, "tail": 1.5, "bottom10": 1.0}),
        # default: 4 tokens -> window 8 > 4: one group, the whole text
        (None, {"mean_confidence": 1.4, "lowest_group": 1.4, "tail": 1.4, "bottom10": 1.4}),
    ],
)
def test_signals_on_a_hand_made_stream(window: int | None, expected: dict[str, float]) -> None:
    got = signals(candidate(LOGPROBS, ALTERNATIVES), window=window)
    assert list(got) == list(SIGNALS)
    assert got == pytest.approx({**expected, "self_certainty": SELF_CERTAINTY, "mean_logprob": -0.4})


def test_bottom10_averages_the_lowest_tenth_of_the_groups() -> None:
    # token confidences 1..20 (alternatives -c +- 0.5), window 1: the lowest 2 of 20 groups
    alternatives = [{"a": -c + 0.5, "b": -c - 0.5} for c in range(1, 21)]
    got = signals(candidate([-0.1] * 20, alternatives), window=1)
    assert got["bottom10"] == pytest.approx(1.5)
    assert got["lowest_group"] == pytest.approx(1.0)
    assert got["tail"] == pytest.approx(20.0)
    assert got["mean_confidence"] == pytest.approx(10.5)


def test_self_certainty_is_zero_for_equal_alternatives_and_grows_with_a_peak() -> None:
    flat = signals(candidate([-1.1] * 3, [{"a": -1.1, "b": -1.1, "c": -1.1}] * 3))
    assert flat["self_certainty"] == pytest.approx(0.0, abs=1e-12)
    peaked = signals(candidate([-0.01] * 3, [{"a": -0.01, "b": -5.0, "c": -6.0}] * 3))
    assert peaked["self_certainty"] > 1.0
    assert peaked["mean_confidence"] > flat["mean_confidence"]


def test_without_alternatives_only_the_log_probability_is_there() -> None:
    assert signals(candidate([-0.5, -1.5])) == {"mean_logprob": -1.0}
    assert signals(candidate(None, mean=-0.25, tokens=3)) == {"mean_logprob": -0.25}
    assert signals(candidate(None)) == {}  # absent, not zero


def test_alternatives_without_sampled_log_probabilities() -> None:
    got = signals(candidate(None, ALTERNATIVES, mean=-0.4))
    assert got["mean_confidence"] == pytest.approx(1.4)
    assert got["mean_logprob"] == -0.4


def test_non_finite_values_are_skipped() -> None:
    tracker = ConfidenceTracker(window=2)
    tracker.update(-0.1, {"a": -0.1, "b": -math.inf})
    tracker.update(-math.inf, {"a": -1.0, "b": -3.0})
    got = tracker.signals()
    assert got["mean_confidence"] == pytest.approx((0.1 + 2.0) / 2)  # the -inf alternative is left out
    assert "mean_logprob" not in got


def test_tracker_matches_the_finished_candidate_token_by_token() -> None:
    rng = random.Random(7)
    alternatives = [{str(j): -rng.uniform(0.0, 8.0) for j in range(5)} for _ in range(300)]
    logprobs = [max(a.values()) for a in alternatives]
    tracker = ConfidenceTracker(window=default_window(300))
    lowest = []
    for lp, alt in zip(logprobs, alternatives, strict=True):
        tracker.update(lp, alt)
        lowest.append(tracker.lowest_group)
    assert tracker.window == 75
    assert lowest[73] is None and lowest[74] is not None  # a group once the first window is full
    assert tracker.signals() == pytest.approx(signals(candidate(logprobs, alternatives)))
    assert tracker.tokens == 300 and len(tracker.groups) == 300 - 75 + 1


def test_tracker_group_before_the_window_is_full() -> None:
    tracker = ConfidenceTracker(window=4)
    assert tracker.group is None and tracker.signals() == {}
    tracker.update(-0.1, {"a": -0.1, "b": -2.1})
    assert tracker.group == pytest.approx(1.1) and tracker.lowest_group is None
    tracker.update(-0.5)  # a token without alternatives counts for the log-probability only
    assert tracker.signals()["mean_logprob"] == pytest.approx(-0.3)


def test_token_confidence() -> None:
    assert token_confidence({"a": -0.5, "b": -1.5}) == 1.0
    assert token_confidence({}) is None


@pytest.mark.parametrize(("n", "window"), [(0, 8), (31, 8), (32, 8), (40, 10), (8192, 2048), (10**6, 2048)])
def test_default_window(n: int, window: int) -> None:
    assert default_window(n) == window


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_bad_window(window: object) -> None:
    with pytest.raises(ConfigError, match="window"):
        ConfidenceTracker(window)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window"):
        signals(candidate(LOGPROBS, ALTERNATIVES), window=window)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_signals_and_weighted_votes_on_the_real_engine(vllm_engine: VLLMEngine) -> None:
    vote = build_ranker(["vote:borda@self_certainty:number"])
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate(
            "What is 2 + 2? Answer with the number.", n=4, temperature=0.8, seed=0, max_tokens=8, top_logprobs=5, rerankers=vote
        )
    for c in result.candidates:
        assert c.ok and c.top_logprobs is not None and c.token_logprobs is not None
        got = signals(c)
        assert list(got) == list(SIGNALS)  # every signal, with five alternatives per token
        assert got["mean_confidence"] > 0 and got["self_certainty"] >= 0
        assert got["lowest_group"] <= got["mean_confidence"] + 1e-9
        assert got["mean_logprob"] == pytest.approx(c.mean_logprob, abs=1e-4)
    assert result.best is not None and result.best.scores["vote"] is not None
    shares = [a.confidence for a in result.answers]
    assert sum(shares) <= 1.0 + 1e-9  # weighted support: the answers' shares of the Borda weight
    scores = await MajorityVote(extract="number", weight="borda", signal="self_certainty").score(
        Request(prompt="2 + 2?"), result.candidates
    )
    assert {s.details["weight"] for s in scores} == {"borda:self_certainty"}  # no fallback: every signal was there
