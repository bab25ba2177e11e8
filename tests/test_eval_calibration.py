"""Platt scaling of a selected answer's confidence (fit, regulariser, monotonicity, errors),
the bootstrap interval of the ECE, and both carried through the reports."""

from __future__ import annotations

import json
import math
import random
import time

import anyio
import pytest

from nbest.errors import ConfigError
from nbest.evaluation import EvalSample, Matcher, score_samples
from nbest.evaluation.calibration import (
    MIN_SCALE,
    ConfidenceMap,
    apply_calibration,
    fit_confidence_map,
    fit_confidence_temperature,
    scale_confidence,
)
from nbest.evaluation.compare import CompareReport, MethodRow, calibrations_of, temperatures_of
from nbest.evaluation.report import EvalReport
from nbest.metrics.calibration import MAX_BOOTSTRAP_WORK, auroc, ece_interval, expected_calibration_error
from nbest.rerankers import MajorityVote, Ranker
from tests.test_eval import sample


def platt_data(seed: int, count: int, scale: float, bias: float) -> tuple[list[float], list[bool]]:
    """Confidences uniform on (0, 1); each is right with probability sigmoid(scale * logit(c) + bias)."""
    rng = random.Random(seed)
    confs, right = [], []
    for _ in range(count):
        c = rng.uniform(0.01, 0.99)
        q = 1 / (1 + math.exp(-(scale * math.log(c / (1 - c)) + bias)))
        confs.append(c)
        right.append(rng.random() < q)
    return confs, right


@pytest.mark.parametrize(("scale", "bias"), [(1.7, -0.8), (0.5, 0.6), (2.5, 0.0)])
def test_platt_fit_recovers_a_known_map(scale: float, bias: float) -> None:
    confs, right = platt_data(0, 20_000, scale, bias)
    fit = fit_confidence_map(confs, right)
    assert fit is not None
    assert fit.scale == pytest.approx(scale, abs=0.08) and fit.bias == pytest.approx(bias, abs=0.08)


def test_platt_fit_is_the_identity_on_a_calibrated_confidence() -> None:
    confs, right = platt_data(1, 20_000, 1.0, 0.0)
    fit = fit_confidence_map(confs, right)
    assert fit is not None and fit.scale == pytest.approx(1.0, abs=0.05) and fit.bias == pytest.approx(0.0, abs=0.05)
    assert fit(0.7) == pytest.approx(0.7, abs=0.02)


def test_the_regulariser_holds_three_answers_near_the_identity() -> None:
    confs, right = [0.9, 0.8, 0.3], [True, True, False]  # separable: the plain fit runs off
    free = fit_confidence_map(confs, right, strength=0.0)
    held = fit_confidence_map(confs, right)
    assert free is not None and held is not None
    assert free.scale > 5  # maximum likelihood sends the slope toward infinity
    assert abs(held.scale - 1) < 0.5 and abs(held.bias) < 0.5
    stronger = fit_confidence_map(confs, right, strength=100.0)
    assert stronger is not None and abs(stronger.scale - 1) + abs(stronger.bias) < abs(held.scale - 1) + abs(held.bias)


def test_the_regulariser_gives_way_to_many_answers() -> None:
    confs, right = platt_data(2, 5_000, 0.4, -1.0)
    fit, free = fit_confidence_map(confs, right), fit_confidence_map(confs, right, strength=0.0)
    assert fit is not None and free is not None
    assert (fit.scale, fit.bias) == (pytest.approx(free.scale, rel=0.01), pytest.approx(free.bias, rel=0.01))
    assert fit is not None and fit.scale == pytest.approx(0.4, abs=0.08) and fit.bias == pytest.approx(-1.0, abs=0.1)


@pytest.mark.parametrize(
    ("confs", "right"),
    [([], []), ([0.9, 0.2, 0.5], [True, True, True]), ([0.9, 0.2], [False, False])],
    ids=["no answers", "all right", "all wrong"],
)
def test_nothing_to_fit_gives_none(confs: list[float], right: list[bool]) -> None:
    assert fit_confidence_map(confs, right) is None
    assert fit_confidence_temperature(confs, right) is None


def test_the_map_is_monotone_and_keeps_auroc() -> None:
    confs, right = platt_data(3, 2_000, -1.0, 0.0)  # right less often the more confident
    fit = fit_confidence_map(confs, right)
    assert fit is not None and fit.scale == MIN_SCALE  # held at the bound: the map stays increasing
    confs, right = platt_data(4, 500, 2.0, -1.5)
    fit = fit_confidence_map(confs, right)
    assert fit is not None
    mapped = [fit(c) for c in confs]
    assert auroc(mapped, right) == auroc(confs, right)
    assert all(a <= b for a, b in zip(sorted(mapped), [fit(c) for c in sorted(confs)], strict=True))


def test_temperature_scaling_is_the_map_without_bias() -> None:
    for t in (0.3, 1.0, 2.0):
        m = ConfidenceMap.from_temperature(t)
        assert (m.scale, m.bias) == (pytest.approx(1 / t), 0.0)
        for p in (0.0, 0.2, 0.5, 0.93, 1.0):
            assert m(p) == pytest.approx(scale_confidence(p, t))
            assert apply_calibration(p, t) == pytest.approx(m(p))
    assert ConfidenceMap(scale=1.0).identity and ConfidenceMap(scale=1.0)(0.37) == 0.37


def test_a_fitted_map_lowers_the_ece_of_an_overconfident_vote() -> None:
    # says 0.6-0.9, right a fifth of the time: no temperature brings 0.6 below 0.5, a bias does
    confs, right = platt_data(5, 400, 1.0, -2.5)
    confs = [0.6 + 0.3 * c for c in confs]
    fit = fit_confidence_map(confs, right)
    t = fit_confidence_temperature(confs, right)
    assert fit is not None and t is not None
    test_confs, test_right = platt_data(6, 400, 1.0, -2.5)
    test_confs = [0.6 + 0.3 * c for c in test_confs]
    mapped = expected_calibration_error([fit(c) for c in test_confs], test_right)
    tempered = expected_calibration_error([scale_confidence(c, t) for c in test_confs], test_right)
    assert mapped is not None and tempered is not None and mapped < tempered


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ConfidenceMap(scale=0.0), "scale"),
        (lambda: ConfidenceMap(scale=-1.0), "scale"),
        (lambda: ConfidenceMap(scale=math.inf), "scale"),
        (lambda: ConfidenceMap(scale=1.0, bias=math.nan), "bias"),
        (lambda: ConfidenceMap.from_temperature(0.0), "temperature"),
        (lambda: apply_calibration(0.5, -2.0), "temperature"),
        (lambda: fit_confidence_map([0.5, 0.6], [True, False], strength=-1.0), "strength"),
        (lambda: fit_confidence_map([0.5, 0.6], [True, False], strength=math.nan), "strength"),
        (lambda: fit_confidence_map([0.5, 1.6], [True, False]), "confidences"),
        (lambda: fit_confidence_map([0.5], [True, False]), "correct"),
    ],
)
def test_bad_values_name_their_field(build: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    assert info.value.parameter == field and field in str(info.value)


# --- the bootstrap interval of the ECE ------------------------------------------------------------------------


def test_interval_covers_the_estimate_and_is_seeded() -> None:
    confs, right = platt_data(7, 119, 1.0, 0.0)
    point = expected_calibration_error(confs, right)
    first = ece_interval(confs, right, resamples=1000, seed=3)
    assert first is not None and point is not None
    assert first.low <= point <= first.high and first.level == 0.9 and first.resamples == 1000
    assert ece_interval(confs, right, resamples=1000, seed=3) == first
    assert ece_interval(confs, right, resamples=1000, seed=4) != first
    wider = ece_interval(confs, right, resamples=1000, seed=3, level=0.99)
    assert wider is not None and wider.low <= first.low and wider.high >= first.high


def test_interval_shows_the_noise_of_a_calibrated_predictor() -> None:
    # a perfectly calibrated confidence on 119 prompts still scores hundredths, and its interval says so
    confs, right = platt_data(8, 119, 1.0, 0.0)
    interval = ece_interval(confs, right)
    assert interval is not None and interval.high - interval.low > 0.03 and interval.high > 0.05


def test_interval_resamples_groups_together() -> None:
    # every prompt twice: resampling the pairs as units is resampling the prompts; as points, it is not
    confs, right = platt_data(9, 60, 1.0, 0.0)
    pairs_c, pairs_r = [c for c in confs for _ in range(2)], [r for r in right for _ in range(2)]
    grouped = ece_interval(pairs_c, pairs_r, groups=[i // 2 for i in range(120)], resamples=500, seed=1)
    alone = ece_interval(confs, right, resamples=500, seed=1)
    assert grouped == alone
    assert ece_interval(pairs_c, pairs_r, resamples=500, seed=1) != grouped


def test_interval_of_nothing_is_none() -> None:
    assert ece_interval([], []) is None


def test_interval_work_is_bounded() -> None:
    huge = [0.5] * 2_000_000
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        ece_interval(huge, [True] * len(huge), resamples=1000)
    assert info.value.parameter == "resamples" and "at most 50" in str(info.value)
    assert time.perf_counter() - started < 5  # refused before any resampling
    assert len(huge) * 50 <= MAX_BOOTSTRAP_WORK
    # at the limit it runs (in blocks of bounded memory)
    interval = ece_interval([0.3, 0.8] * 50_000, [False, True] * 50_000, resamples=20)
    assert interval is not None and interval.resamples == 20


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resamples": 0}, "resamples"),
        ({"resamples": True}, "resamples"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"bins": 0}, "bins"),
        ({"groups": [1]}, "groups"),
        ({"correct": [True]}, "correct"),
        ({"confidences": [0.5, math.nan]}, "confidences"),
        ({"confidences": [0.5, 1.5]}, "confidences"),
    ],
)
def test_interval_bad_values_name_their_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"confidences": [0.2, 0.8], "correct": [False, True], **kwargs}
    with pytest.raises(ConfigError) as info:
        ece_interval(**args)  # type: ignore[arg-type]
    assert info.value.parameter == field and field in str(info.value)


# --- carried in the reports -----------------------------------------------------------------------------------


def scored(temperatures: dict[str, float | ConfidenceMap] | None = None) -> EvalReport:
    samples: list[EvalSample] = [
        sample("A", "51", [("51", -0.5), ("51", -1.0), ("52", -0.2), ("no idea", -2.0)]),
        sample("B", "7", [("7", -0.3), ("8", -0.4), ("8", -0.6), ("7", -0.9)]),
        sample("C", "3", [("2", -0.3), ("2", -0.4), ("2", -0.6), ("3", -0.9)]),
    ]
    rankers = {"vote": Ranker([MajorityVote(extract="number")])}
    return anyio.run(
        lambda: score_samples(samples, rankers, matcher=Matcher("exact", "number"), subsamples=10, temperatures=temperatures)
    )


def test_report_carries_the_map_and_the_intervals_and_round_trips() -> None:
    report = scored()
    at1 = report.levels[0].rerankers["vote"]  # one candidate: its share is 1.0, right 5 times in 12
    assert at1.fitted_calibration is not None and at1.fitted_temperature is not None
    assert at1.ece_interval is not None and at1.ece_interval.low <= (at1.ece or 0) <= at1.ece_interval.high
    assert at1.applied_calibration is None and at1.ece_calibrated is None and at1.ece_calibrated_interval is None
    again = EvalReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert calibrations_of(again)["vote@1"] == at1.fitted_calibration
    assert temperatures_of(again)["vote@1"] == at1.fitted_temperature


def test_a_map_or_a_temperature_applied_from_elsewhere() -> None:
    shrink = ConfidenceMap(scale=1.0, bias=-math.log(3))  # 1.0 stays ~1, 0.5 -> 0.25, 0.75 -> 0.5
    with_map = scored({"vote@4": shrink}).levels[-1].rerankers["vote"]
    assert with_map.applied_calibration == shrink and with_map.applied_temperature is None
    assert with_map.ece_calibrated is not None and with_map.ece_calibrated_interval is not None
    assert with_map.ece_calibrated != with_map.ece
    with_t = scored({"vote@4": 2.0}).levels[-1].rerankers["vote"]
    assert with_t.applied_temperature == 2.0 and with_t.applied_calibration is None
    as_map = scored({"vote@4": ConfidenceMap.from_temperature(2.0)}).levels[-1].rerankers["vote"]
    assert as_map.ece_calibrated == pytest.approx(with_t.ece_calibrated)


def test_an_old_report_without_maps_still_reads() -> None:
    report = scored()
    raw = json.loads(report.model_dump_json())
    for level in raw["levels"]:
        for result in level["rerankers"].values():
            for key in ("fitted_calibration", "applied_calibration", "ece_interval", "ece_calibrated_interval"):
                del result[key]
    old = EvalReport.model_validate(raw)
    assert all(isinstance(v, float) for v in calibrations_of(old).values())
    assert calibrations_of(old) == temperatures_of(old) != {}
    rows = [MethodRow(method="vote", n=4, generation="shared", fitted_temperature=0.5)]
    old_compare = CompareReport(prompts=3, n=4, methods=["vote"], rows=rows)
    assert calibrations_of(old_compare) == {"vote@4": 0.5}
    rows[0].fitted_calibration = ConfidenceMap(scale=0.8, bias=-0.2)
    assert calibrations_of(old_compare) == {"vote@4": ConfidenceMap(scale=0.8, bias=-0.2)}


def test_score_samples_refuses_bad_resamples() -> None:
    with pytest.raises(ConfigError) as info:
        anyio.run(lambda: score_samples([], {}, resamples=0))
    assert info.value.parameter == "resamples"


def test_one_map_for_every_n_from_four() -> None:
    # eight candidates a prompt, answers split so that some subsets vote right and some wrong
    texts = [("7", -0.3), ("8", -0.4), ("7", -0.6), ("8", -0.9), ("8", -0.2), ("9", -0.5), ("7", -0.7), ("8", -0.1)]
    samples = [sample(f"P{i}", "7" if i % 2 else "8", texts[i:] + texts[:i]) for i in range(6)]
    rankers = {"vote": Ranker([MajorityVote(extract="number")])}
    report = anyio.run(lambda: score_samples(samples, rankers, matcher=Matcher("exact", "number"), subsamples=6))
    fitted = {lv.n: lv.rerankers["vote"].fitted_calibration for lv in report.levels}
    assert fitted[4] is not None and fitted[4] == fitted[8]  # one shape for N >= 4, fitted on both levels' answers
    at8 = report.levels[-1].rerankers["vote"]
    assert at8.fitted_temperature is not None  # the temperature stays per N
    assert calibrations_of(report)["vote@8"] == fitted[4]
