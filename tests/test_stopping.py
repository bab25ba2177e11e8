"""Adaptive-Consistency stopping rules on known vote counts (hand-checked values)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from nbest import ConfigError, Orchestrator, rerankers, stopping
from nbest.orchestrator.adaptive import DEFAULT_WAVE, check_adaptive
from nbest.orchestrator.pruning import parse_prune
from nbest.types import Answer, Candidate, CandidateSpec, Prompt, Result, SamplingParams
from tests.scripted import ScriptedEngine, Step


def result_with(votes: list[int], confidences: list[float] | None = None) -> Result:
    """A Result whose answers have ``votes`` supporting candidates each."""
    spec = CandidateSpec(index=0, params=SamplingParams())
    answers, index = [], 0
    confidences = confidences or [v / max(1, sum(votes)) for v in votes]
    for k, (count, conf) in enumerate(zip(votes, confidences, strict=True)):
        answers.append(Answer(answer=f"a{k}", confidence=conf, support=list(range(index, index + count))))
        index += count
    cands = [Candidate(index=i, spec=spec, text="t", rank=i + 1, confidence=1 / max(index, 1)) for i in range(index)]
    return Result(id="r", prompt="q", n=32, candidates=cands, best=cands[0] if cands else None, answers=answers)


# P(Beta(a+1, b+1) > 1/2) = sum_{k<=a} C(a+b+1, k) / 2^(a+b+1), by hand:
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (0, 0, 1 / 2),  # C(1,0)/2
        (1, 0, 3 / 4),  # (1+2)/4
        (2, 0, 7 / 8),
        (3, 0, 15 / 16),
        (4, 0, 31 / 32),
        (2, 1, 11 / 16),  # (1+4+6)/16
        (3, 1, 26 / 32),  # (1+5+10+10)/32
        (3, 3, 1 / 2),  # a tie is a coin flip
        (4, 1, 57 / 64),  # (1+6+15+20+15)/64
        (5, 1, 120 / 128),  # (1+7+21+35+35+21)/128
        (1, 3, 6 / 32),  # (1+5)/32: the "leader" is behind
    ],
)
def test_beta_probability_on_known_counts(a: int, b: int, expected: float) -> None:
    assert stopping.beta_probability(a, b) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("votes", "threshold", "stop"),
    [
        ([3], 0.95, False),  # 15/16 = 0.9375
        ([4], 0.95, True),  # 31/32 = 0.96875
        ([5, 1], 0.95, False),  # 0.9375
        ([6, 1], 0.95, True),  # 247/256 = 0.9648
        ([3, 1], 0.8, True),  # 0.8125
        ([3, 1, 1], 0.8, True),  # Beta looks at the two leading answers only
        ([2, 2], 0.5, True),  # exactly 1/2 reaches 0.5
        ([], 0.5, False),  # nothing to judge yet
    ],
)
def test_beta_decision_on_a_result(votes: list[int], threshold: float, stop: bool) -> None:
    decision = stopping.Beta(threshold).check(result_with(votes))
    assert decision.stop is stop
    if votes:
        assert decision.answer == "a0"
        assert decision.probability == pytest.approx(stopping.beta_probability(votes[0], votes[1] if len(votes) > 1 else 0))
    else:
        assert decision.probability is None and decision.answer is None


# P(G_1 > max_j G_j) for independent G_i ~ Gamma(c_i + 1), by hand:
@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([0, 0], 1 / 2),
        ([0, 0, 0], 1 / 3),  # symmetry
        ([0, 0, 0, 0, 0], 1 / 5),
        ([1, 0, 0], 11 / 18),  # ∫ x e^-x (1 - e^-x)^2 dx = 1 - 2/4 + 1/9
        ([0, 0, 1], 7 / 36),  # ∫ e^-x (1 - e^-x)(1 - e^-x - x e^-x) dx = 1 - 1 - 1/4 + 1/3 + 1/9
        ([4], 31 / 32),  # one answer seen: paired with an unseen one, as Beta
        ([3, 1], 26 / 32),  # two answers: equals Beta
        ([2, 1], 11 / 16),
    ],
)
def test_dirichlet_probability_on_known_counts(counts: list[int], expected: float) -> None:
    assert stopping.dirichlet_probability(counts) == pytest.approx(expected, abs=1e-9)


def test_dirichlet_probabilities_of_all_leaders_sum_to_one() -> None:
    counts = [5, 3, 2, 1]
    total = sum(stopping.dirichlet_probability([counts[i], *counts[:i], *counts[i + 1 :]]) for i in range(len(counts)))
    assert total == pytest.approx(1.0, abs=1e-8)


def test_dirichlet_is_more_cautious_than_beta_with_more_answers() -> None:
    result = result_with([4, 1, 1])
    beta, dirichlet = stopping.Beta(0.85).check(result), stopping.Dirichlet(0.85).check(result)
    assert beta.probability is not None and dirichlet.probability is not None
    assert dirichlet.probability < beta.probability  # another rival can only lower the leader's chance
    assert beta.probability == 57 / 64  # (1+6+15+20+15)/64 = 0.8906
    assert beta.stop and not dirichlet.stop  # Dirichlet: 0.8128


def test_dirichlet_stays_exact_for_large_counts() -> None:
    assert stopping.dirichlet_probability([40, 0]) == pytest.approx(1 - 2.0**-41, abs=1e-9)
    assert stopping.dirichlet_probability([20, 20, 3]) == pytest.approx(0.5, abs=1e-3)  # two equal leaders


@pytest.mark.parametrize(
    ("rule", "stop", "probability"),
    [
        (stopping.Confidence(0.6), True, 0.75),  # the top answer's confidence
        (stopping.Confidence(0.8), False, 0.75),
        (stopping.Confidence(0.2, on="candidate"), True, 0.25),  # the best candidate's (1/4 each)
        (stopping.Confidence(0.3, on="candidate"), False, 0.25),
    ],
)
def test_confidence_rule(rule: stopping.Confidence, stop: bool, probability: float) -> None:
    decision = rule.check(result_with([3, 1], [0.75, 0.25]))
    assert decision.stop is stop and decision.probability == pytest.approx(probability)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beta:0.95", "Beta(threshold=0.95)"),
        ("Dirichlet:0.9", "Dirichlet(threshold=0.9)"),
        ("confidence:0.8", "Confidence(threshold=0.8, on='answer')"),
        ("confidence:0.5:candidate", "Confidence(threshold=0.5, on='candidate')"),
        ("esc:5", "ESC(window=5)"),
        (" ESC: 1 ", "ESC(window=1)"),
        ("esc:64", "ESC(window=64)"),
        ("beta:0.95:weighted", "Beta(threshold=0.95, weighted=True)"),
        ("Dirichlet:0.9: Weighted ", "Dirichlet(threshold=0.9, weighted=True)"),
    ],
)
def test_parse_rule(text: str, expected: str) -> None:
    assert stopping.is_rule_text(text)
    assert repr(stopping.parse_rule(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beta:", "threshold must be a number"),
        ("beta:high", "threshold must be a number"),
        ("beta:1.5", "(0, 1)"),
        ("dirichlet:0", "(0, 1)"),
        ("beta:0.9:answer", "takes a threshold, then optionally :weighted"),
        ("dirichlet:0.9:weighted:x", "optionally :weighted"),
        ("confidence:0.9:best", "answer or candidate"),
        ("gamma:0.9", "unknown stopping rule 'gamma'"),
        ("gamma:0.9", "esc:W"),
        ("esc:", "window size"),
        ("esc:0", "from 1 to 64"),
        ("esc:65", "from 1 to 64"),
        ("esc:2.5", "whole number"),
        ("esc:-3", "whole number"),
        ("esc:²", "whole number"),
        ("esc:" + "9" * 5000, "at most 64 characters"),
        ("esc:5:answer", "window size"),
    ],
)
def test_parse_rule_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--until") as info:
        stopping.parse_rule(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("parse", "text", "name", "message", "parameter"),
    [
        (stopping.parse_rule, "gamma:0.9", "--until", "--until 'gamma:0.9': unknown stopping rule 'gamma'", "until"),
        (stopping.parse_rule, "gamma:0.9", "until", "until 'gamma:0.9': unknown stopping rule 'gamma'", "until"),
        (stopping.parse_rule, "beta:1.5", "until", "until 'beta:1.5': threshold: must be a probability in (0, 1)", "until"),
        (stopping.parse_rule, "esc:" + "9" * 100, "until", "until: at most 64 characters for a stopping rule", "until"),
        (parse_prune, "most", "prune", "prune 'most': expected KEEP[:WARMUP[:WINDOW]]", "prune"),
        (parse_prune, "most", "--prune", "--prune 'most': expected KEEP[:WARMUP[:WINDOW]]", "prune"),
        (parse_prune, "2", "--prune", "--prune '2': prune.keep: must be a share in (0, 1] (got 2.0)", "prune.keep"),
        (parse_prune, "0.9:0", "prune", "prune '0.9:0': prune.warmup: must be a whole number", "prune.warmup"),
        (parse_prune, "0." + "9" * 100, "--prune", "--prune: at most 64 characters (got 102 characters)", "prune"),
    ],
)
def test_short_form_errors_name_what_the_caller_says(
    parse: Callable[..., object], text: str, name: str, message: str, parameter: str
) -> None:
    """The CLI says ``--until``/``--prune``, an HTTP body or settings ``until``/``prune``: each
    caller passes its own name, and the message starts with it as given."""
    with pytest.raises(ConfigError) as info:
        parse(text, name=name)
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.parameter == parameter


def test_short_form_errors_keep_their_default_names() -> None:
    with pytest.raises(ConfigError, match=r"^--until 'x:1': unknown stopping rule"):
        stopping.parse_rule("x:1")
    with pytest.raises(ConfigError, match=r"^prune 'x': expected"):
        parse_prune("x")


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, math.nan])
def test_threshold_must_be_a_probability(threshold: float) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        stopping.Beta(threshold)


def test_stop_strings_are_not_rules() -> None:
    assert not stopping.is_rule_text("\n")
    assert not stopping.is_rule_text("Answer:")


def result_of(answers: list[str | None], failed: tuple[int, ...] = ()) -> Result:
    """A Result whose candidate i (plan order) gives ``answers[i]`` (None: no answer)."""
    cands = [
        Candidate(
            index=i,
            spec=CandidateSpec(index=i, params=SamplingParams()),
            text="t",
            rank=None if i in failed else i + 1,
            error="boom" if i in failed else None,
        )
        for i in range(len(answers))
    ]
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None and i not in failed:
            groups.setdefault(a, []).append(i)
    found = [Answer(answer=a, confidence=len(s) / len(answers), support=s) for a, s in groups.items()]
    found.sort(key=lambda a: -len(a.support))
    return Result(id="r", prompt="q", n=32, candidates=cands, best=cands[0], answers=found)


@pytest.mark.parametrize(
    ("window", "answers", "failed", "stop", "probability"),
    [
        (3, ["a", "a", "a"], (), True, 1.0),  # the first window agrees
        (3, ["a", "a", "b"], (), False, 2 / 3),
        (3, ["a", "a"], (), False, None),  # no complete window yet
        (3, ["a", "b", "a", "c", "c", "c"], (), True, 1.0),  # the second window agrees
        (3, ["a", "b", "a", "c", "c", "c", "d"], (), True, 1.0),  # a partial third window is not judged
        (3, ["a", "b", "a", "a", "a", "b"], (), False, 2 / 3),  # 4 a's in all, but no window agrees
        (2, ["a", "a", "a", "a"], (1,), True, 1.0),  # window 0 broken by a failure, window 1 agrees
        (2, ["a", "a"], (1,), False, 0.5),
        (2, [None, None], (), False, 0.0),  # agreeing on no answer is no agreement
        (1, ["z"], (), True, 1.0),
    ],
)
def test_esc_decision(
    window: int, answers: list[str | None], failed: tuple[int, ...], stop: bool, probability: float | None
) -> None:
    decision = stopping.ESC(window).check(result_of(answers, failed))
    assert decision.stop is stop
    assert decision.probability == (None if probability is None else pytest.approx(probability))


@pytest.mark.parametrize("window", [0, 65, 2.0, True, "5"])
def test_esc_window_must_be_a_whole_number_in_range(window: object) -> None:
    with pytest.raises(ConfigError, match="window"):
        stopping.ESC(window)  # type: ignore[arg-type]


def test_esc_sets_the_wave_size() -> None:
    assert check_adaptive(stopping.ESC(5), None) == 5
    assert check_adaptive(stopping.ESC(5), 2) == 2  # an explicit wave wins
    assert check_adaptive(stopping.Beta(0.9), None) == DEFAULT_WAVE
    assert isinstance(stopping.parse_rule("esc:3"), stopping.StoppingRule)


def by_index(answers: dict[int, str]) -> object:
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        return Step(text=f"The answer is {answers.get(int(request_id.rsplit('-', 1)[1]), '0')}.")

    return respond


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("answers", "used"),
    [
        (["7"] * 16, 4),  # the first window agrees
        (["7", "7", "8", "7"] + ["7"] * 12, 8),  # window 0 split, window 1 agrees
        (["1", "2", "1", "1", "3", "1", "1", "1", "2", "2", "2", "2"] + ["9"] * 4, 12),  # only window 2 agrees
        ([str(i) for i in range(16)], 16),  # never agrees: the whole plan
    ],
)
async def test_esc_stops_after_the_first_unanimous_window(scripted: ScriptedEngine, answers: list[str], used: int) -> None:
    scripted.respond = by_index(dict(enumerate(answers)))  # type: ignore[assignment]
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate(
            "q", n=16, seed=2, until=stopping.parse_rule("esc:4"), rerankers=[rerankers.MajorityVote(extract="number")]
        )
    assert result.samples_used == used
    assert sorted(c.index for c in result.candidates) == list(range(used))
    assert len(scripted.history) <= used + 4  # at most one window generated ahead


def test_until_esc_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from nbest.cli import main
    from tests.batch_engines import same_answer

    main(["run", "q", "-n", "12", "--until", "esc:3", "--reranker", "vote:number", "--json"], engine_factory=same_answer)
    result = json.loads(capsys.readouterr().out)
    assert result["samples_used"] == 3  # the first window of 3 agrees, and it was the first wave


# -- weighted votes: an answer counts confidence / sum(confidences) * (candidates that voted) votes.
@pytest.mark.parametrize(
    ("votes", "confidences", "counts"),
    [
        ([2, 3], [0.7, 0.3], [3.5, 1.5]),  # cisc shares 0.7 / 0.3 over 5 voters
        ([3, 1], [0.75, 0.25], [3.0, 1.0]),  # uniform shares: the plain counts
        ([2, 2], [0.4, 0.4], [2.0, 2.0]),  # shares of all candidates, one answerless: renormalised over the answers
        ([1, 1, 2], [0.5, 0.3, 0.2], [2.0, 1.2, 0.8]),
        ([2, 1], [0.0, 0.0], [2.0, 1.0]),  # no weight anywhere: the plain counts
        ([], [], []),
    ],
)
def test_weighted_counts(votes: list[int], confidences: list[float], counts: list[float]) -> None:
    assert stopping.weighted_counts(result_with(votes, confidences)) == pytest.approx(counts)


@pytest.mark.parametrize(
    ("rule", "votes", "confidences", "expected"),
    [
        # counts 3 and 1 (shares 0.75 / 0.25 of 4 voters): P = (1+5+10+10)/32, as unweighted [3, 1]
        (stopping.Beta(0.8, weighted=True), [2, 2], [0.75, 0.25], 26 / 32),
        # counts 4 and 0 (one answer holds all the weight): 31/32
        (stopping.Beta(0.95, weighted=True), [3, 1], [1.0, 0.0], 31 / 32),
        # counts 1.5 and 0.5 (shares 0.75 / 0.25 of 2 voters): P(Beta(2.5, 1.5) > 1/2) = 1/2 + 2/(3 pi)
        (stopping.Beta(0.7, weighted=True), [1, 1], [0.75, 0.25], 0.5 + 2 / (3 * math.pi)),
        # three answers, counts 2, 1, 1 (shares 0.5 / 0.25 / 0.25 of 4): the unweighted Dirichlet of [2, 1, 1]
        (stopping.Dirichlet(0.5, weighted=True), [1, 1, 2], [0.5, 0.25, 0.25], None),
        # one answer, count 1: paired with an unseen one, P(Beta(2, 1) > 1/2) = 3/4
        (stopping.Dirichlet(0.5, weighted=True), [1], [1.0], 3 / 4),
    ],
)
def test_weighted_rules_by_hand(rule: stopping.Beta, votes: list[int], confidences: list[float], expected: float | None) -> None:
    decision = rule.check(result_with(votes, confidences))
    if expected is None:
        expected = stopping.dirichlet_probability([2, 1, 1])
    assert decision.probability == pytest.approx(expected, abs=1e-9)
    assert decision.stop is (expected >= rule.threshold)
    assert decision.answer == "a0"


def test_weighted_votes_can_decide_where_counts_cannot() -> None:
    # 2 votes each, but the first answer holds 0.75 of the weight: counts 3 and 1
    result = result_with([2, 2], [0.75, 0.25])
    assert stopping.Beta(0.8).check(result).probability == 0.5  # [2, 2]: a coin flip
    weighted = stopping.Beta(0.8, weighted=True).check(result)
    assert weighted.stop is True and weighted.probability == 26 / 32


def test_weighted_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="weighted"):
        stopping.Beta(0.9, weighted="yes")  # type: ignore[arg-type]
    assert repr(stopping.Dirichlet(0.9)) == "Dirichlet(threshold=0.9)"  # unweighted reads as before


@pytest.mark.parametrize("counts", [[math.nan, 1.0], [math.inf], [-0.5, 0.0]])
def test_weighted_counts_must_be_finite(counts: list[float]) -> None:
    with pytest.raises(ConfigError, match="votes"):
        stopping.dirichlet_probability(counts)
    with pytest.raises(ConfigError, match="votes"):
        stopping.beta_probability(counts[0], counts[1] if len(counts) > 1 else 0.0)
