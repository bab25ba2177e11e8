"""``nbest eval --compare``, ``--split``, ``--prune`` and ``--calibration`` on a scripted engine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from nbest.cli import main
from nbest.errors import ConfigError
from nbest.evaluation import EvalSample, Fields, Matcher, read_dataset, score_samples
from nbest.evaluation.calibration import fit_confidence_temperature, scale_confidence
from nbest.evaluation.compare import CompareReport, compare_methods, pareto_front, parse_method
from nbest.evaluation.table import applied_map
from nbest.rerankers import MajorityVote, Ranker
from nbest.types import Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step, toks
from tests.test_eval import PNG, sample

DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def confident_evens(engines: list[ScriptedEngine]) -> Any:
    """Seeds 0, 1 (the warm-up) and every even seed answer 4 confidently; odd seeds from 3 on
    answer 7 with a low confidence. Six tokens each; greedy (seed 0) answers 4."""

    def factory(options: object) -> dict[str, ScriptedEngine]:
        def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
            seed = params.seed or 0
            good = seed % 2 == 0 or seed < 2
            c, answer = (3.0, 4 if seed % 2 == 0 else 5) if good else (1.0, 7)
            words = ["The answer", " is", f" {answer}", ".", " Done", "."]
            return Step(stream=toks([(w, c) for w in words]), token_delay=0.001)

        engine = ScriptedEngine(respond=respond)
        engines.append(engine)
        return {"default": engine}

    return factory


def write_set(path: Path, count: int = 3) -> Path:
    rows = [{"id": f"q{i}", "prompt": f"question {i}", "answer": 4, "split": "tuning" if i == 0 else "heldout"}
            for i in range(count)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(argv: list[str], factory: Any = None) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=factory)
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_compare_shares_one_generation_and_counts_pruned_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engines: list[ScriptedEngine] = []
    data = write_set(tmp_path / "set.jsonl")
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "8", "--seed", "0", "--top-logprobs", "2",
            "--compare", "vote", "--compare", "logprob", "--compare", "greedy", "--compare", "oracle",
            "--compare", "vote+prune:0.9:2:2", "--compare", "vote:cisc+prune:0.9:2:2",
            "--report", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")]  # fmt: skip
    code = run_cli(argv, confident_evens(engines))
    out, err = capsys.readouterr()
    assert code == 0, err
    (engine,) = engines
    # one shared generation (8 samples + 1 greedy per prompt) and one pruned one (8 per prompt), for 6 methods
    assert len(engine.history) == 3 * 9 + 3 * 8
    report = CompareReport.model_validate_json((tmp_path / "r.json").read_text())
    assert set(report.generations) == {"shared", "prune:0.9:2:2"}
    rows = {(r.method, r.n): r for r in report.rows}
    assert rows[("vote", 8)].tokens == 8 * 6 and rows[("vote", 1)].tokens == 6
    assert rows[("greedy", 1)].accuracy == 1.0 and rows[("greedy", 1)].tokens == 6
    # pruned: seeds 3, 5, 7 stop after their first 2-token window: 5 * 6 + 3 * 2 tokens; the votes left all say 4 or 5
    pruned = rows[("vote+prune:0.9:2:2", 8)]
    assert pruned.tokens == 5 * 6 + 3 * 2 and pruned.accuracy == 1.0
    assert ("vote+prune:0.9:2:2", 4) not in rows  # a pruned run is measured at its full N only
    assert rows[("vote:cisc+prune:0.9:2:2", 8)].tokens == pruned.tokens
    items = report.generations["prune:0.9:2:2"].items
    assert all(item.correct[3] is False for item in items)  # a pruned candidate is never right
    # the front: greedy (6 tokens, 100 %) beats every other method; the oracle is a ceiling, never on it
    assert [(r.method, r.n) for r in report.rows if r.pareto] == [("greedy", 1)]
    assert "accuracy per token" in out and "vote:cisc+prune:0.9:2:2" in out
    assert (tmp_path / "plots" / "accuracy_vs_tokens.png").read_bytes().startswith(PNG)


def test_eval_prune_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engines: list[ScriptedEngine] = []
    data = write_set(tmp_path / "set.jsonl")
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "8", "--seed", "0", "--top-logprobs", "2",
            "--split", "heldout", "--prune", "0.9:2:2", "--reranker", "vote", "--report", str(tmp_path / "r.json")]  # fmt: skip
    assert run_cli(argv, confident_evens(engines)) == 0
    err = capsys.readouterr().err
    assert "--prune 0.9:2:2: 3.0 of 8 candidates per prompt pruned on average" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert [item["id"] for item in report["items"]] == ["q1", "q2"]  # the held-out split only
    assert report["completion_tokens"] == 2 * (5 * 6 + 3 * 2)
    assert {c.prompt[-1].content for c in engines[0].history} == {"question 1", "question 2"}  # type: ignore[union-attr]


def test_split_selection_and_its_errors(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set.jsonl", 4)
    assert [it.id for it in read_dataset(data, Fields(), split="tuning")] == ["q0"]
    assert [it.id for it in read_dataset(data, Fields(), split="heldout", limit=2)] == ["q1", "q2"]
    with pytest.raises(ConfigError, match=r"no item of .* is in split 'dev'; its splits: heldout, tuning"):
        read_dataset(data, Fields(), split="dev")
    data.write_text(json.dumps({"prompt": "p", "answer": 1}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: no split field 'split'"):
        read_dataset(data, Fields(), split="tuning")


@pytest.mark.parametrize(
    ("text", "selector", "prune", "until", "generation"),
    [
        ("vote", "vote", None, None, "shared"),
        ("vote:cisc@self_certainty", "vote:cisc@self_certainty", None, None, "shared"),
        ("vote:cisc+prune:low:8", "vote:cisc", "0.1:8:16", None, "prune:0.1:8:16"),
        ("vote+until:beta:0.95", "vote", None, "beta:0.95", "until:beta:0.95"),
        ("vote+prune:0.5+until:esc:4", "vote", "0.5:4:16", "esc:4", "prune:0.5:4:16+until:esc:4"),
        ('{"kind": "vote", "extract": "regex:a+b"}+prune:high', '{"kind": "vote", "extract": "regex:a+b"}', "0.9:4:16",
         None, "prune:0.9:4:16"),
    ],
)  # fmt: skip
def test_method_forms(text: str, selector: str, prune: str | None, until: str | None, generation: str) -> None:
    method = parse_method(text)
    assert (method.selector, None if method.prune is None else str(method.prune), method.until) == (selector, prune, until)
    assert method.generation == generation


def test_pareto_front_by_hand() -> None:
    # (tokens, accuracy): the cheap 50 %, the 70 % at 20; 70 % at 30 and 60 % at 20 are beaten
    assert pareto_front([(10, 0.5), (20, 0.7), (30, 0.7), (20, 0.6)]) == [True, True, False, False]
    assert pareto_front([(10, 0.5), (10, 0.5)]) == [True, True]  # equal points do not beat each other


def test_temperature_fitted_on_one_split_applies_to_another() -> None:
    # claimed 0.9, right 3 times in 4: T = 2 brings 0.9 to 0.75
    t = fit_confidence_temperature([0.9] * 4, [True, True, True, False])
    assert t is not None and t == pytest.approx(2.0, rel=1e-3) and scale_confidence(0.9, t) == pytest.approx(0.75, rel=1e-3)
    assert fit_confidence_temperature([0.9, 0.8], [True, True]) is None  # nothing to learn from
    # vote at N = 4 on the hand-made samples of test_eval: shares 0.5 (A, right) and 0.5 (B, right)
    samples: list[EvalSample] = [
        sample("A", "51", [("51", -0.5), ("51", -1.0), ("52", -0.2), ("no idea", -2.0)]),
        sample("B", "7", [("7", -0.3), ("8", -0.4), ("8", -0.6), ("7", -0.9)]),
    ]
    rankers = {"vote": Ranker([MajorityVote(extract="number")])}
    report = anyio.run(
        lambda: score_samples(samples, rankers, matcher=Matcher("exact", "number"), subsamples=10, temperatures={"vote@4": 0.5})
    )
    top = report.levels[-1].rerankers["vote"]
    assert top.ece == pytest.approx(0.5) and top.applied_temperature == 0.5
    assert top.ece_calibrated == pytest.approx(0.5)  # logit(0.5) = 0: any temperature leaves 0.5 where it is
    assert top.fitted_temperature is None  # both right
    assert report.levels[0].rerankers["vote"].applied_temperature is None  # fitted for N = 4 only


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--compare", "nope"], "--compare 'nope': unknown reranker 'nope'"),
        (["--compare", "vote+prune:2"], "prune.keep: must be a share in (0, 1]"),
        (["--compare", "vote+cut:3"], "'cut:3' is not a change"),
        (["--compare", "greedy+prune:0.9"], "greedy is one candidate"),
        (["--compare", "vote", "--compare", "vote"], "'vote' is given twice"),
        (["--compare", "vote", "--reranker", "logprob"], "--reranker: with --compare the methods name their rerankers"),
        (["--compare", "vote", "--prune", "0.9"], "--prune: with --compare put the policy in a method"),
        (["--compare", "vote", "--greedy"], "--greedy: with --compare the greedy baseline is a method"),
        (["--compare", "vote+until:beta:2"], "--compare 'vote+until:beta:2': until 'beta:2': threshold"),
        (["--compare", "vote", "--wave", "2"], "--wave: only used with a stopping rule (--compare vote+until:beta:0.95)"),
        (["--compare", "vote+until:esc:2", "--wave", "0"], "--wave: must be a whole number >= 1 (got 0)"),
        (["--split", "dev"], "is in split 'dev'; its splits: heldout, tuning"),
        (["--split", ""], "--split: a split's name"),
        (["--prune", "0.9:0"], "--prune '0.9:0': prune.warmup: must be a whole number"),
        (["--calibration", "{tmp}/set.jsonl"], "is not a report written by nbest eval --report"),
        (["--calibration", "{tmp}/missing.json"], "--calibration: no such file"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    data = write_set(tmp_path / "set.jsonl")
    argv = ["eval", str(data), "--answer-field", "answer", *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert run_cli(argv, confident_evens([])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


@pytest.mark.parametrize("wave", [2, 4])
def test_compare_takes_wave_with_a_method_that_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str], wave: int) -> None:
    """--wave goes with the methods' own rules (+until:RULE), without --until: esc:1 stops after
    the first wave, so the stopped method's row is at N = --wave."""
    data = write_set(tmp_path / "set.jsonl")
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "8", "--seed", "0", "--compare", "vote",
            "--compare", "vote+until:esc:1", "--wave", str(wave), "--report", str(tmp_path / "r.json")]  # fmt: skip
    code = run_cli(argv, confident_evens([]))
    assert code == 0, capsys.readouterr().err
    report = CompareReport.model_validate_json((tmp_path / "r.json").read_text())
    assert [r.n for r in report.rows if r.method == "vote+until:esc:1"] == [wave]
    assert [r.n for r in report.rows if r.method == "vote"] == [1, 2, 4, 8]  # the shared generation: no rule, no wave


def _strip_maps(value: Any) -> Any:
    """A report as written before Platt maps: no ``fitted_calibration`` (nor the newer fields) anywhere."""
    new = {"fitted_calibration", "applied_calibration", "ece_interval", "ece_calibrated_interval"}
    if isinstance(value, dict):
        return {k: _strip_maps(v) for k, v in value.items() if k not in new}
    if isinstance(value, list):
        return [_strip_maps(v) for v in value]
    return value


@pytest.mark.parametrize("old", [False, True], ids=["maps", "temperature-only report"])
def test_calibration_from_a_tuning_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: bool) -> None:
    data = write_set(tmp_path / "set.jsonl", 6)
    common = ["eval", str(data), "--answer-field", "answer", "-n", "4", "--seed", "0", "--compare", "logprob"]
    assert run_cli([*common, "--split", "tuning", "--report", str(tmp_path / "t.json")], confident_evens([])) == 0
    tuning_table = capsys.readouterr().out
    tuning = CompareReport.model_validate_json((tmp_path / "t.json").read_text())
    assert all(applied_map(tuning, row) == "–" for row in tuning.rows)  # nothing applied without --calibration
    assert "ECE calibrated" in tuning_table and "T fit" not in tuning_table
    at2 = next(r for r in tuning.rows if r.n == 2)  # seeds 0, 1 answer 4 and 5: some right, some wrong
    assert at2.fitted_temperature is not None and at2.fitted_calibration is not None
    if old:
        raw = _strip_maps(json.loads((tmp_path / "t.json").read_text()))
        assert "fitted_calibration" not in json.dumps(raw) and "fitted_temperature" in json.dumps(raw)
        (tmp_path / "t.json").write_text(json.dumps(raw))
    argv = [*common, "--split", "heldout", "--calibration", str(tmp_path / "t.json"), "--report", str(tmp_path / "h.json")]
    assert run_cli(argv, confident_evens([])) == 0
    held = CompareReport.model_validate_json((tmp_path / "h.json").read_text())
    result = next(lv for lv in held.generations["shared"].levels if lv.n == 2).rerankers["logprob"]
    if old:  # the temperature, as before maps were fitted
        assert result.applied_temperature == at2.fitted_temperature and result.applied_calibration is None
    else:  # the map wins over the temperature
        assert result.applied_calibration == at2.fitted_calibration and result.applied_temperature is None
    row2 = next(r for r in held.rows if r.n == 2)
    assert row2.ece_calibrated is not None and row2.ece_calibrated_interval is not None
    assert row2.ece_calibrated_interval.resamples == 1000
    assert row2.fitted_calibration == result.fitted_calibration  # the rows carry what the levels fitted
    # the table shows the map behind "ECE calibrated": the one applied, not the one fitted here
    table = capsys.readouterr().out
    line = next(ln for ln in table.splitlines() if ln.split("│")[2:3] == [" 2 "])
    if old:
        assert at2.fitted_temperature is not None
        shown = f"T={at2.fitted_temperature:.2f}"
    else:
        assert at2.fitted_calibration is not None
        shown = f"{at2.fitted_calibration.scale:.2f},{at2.fitted_calibration.bias:.2f}"
    assert applied_map(held, row2) == shown and f" {shown} " in line, table
    assert f"{row2.ece_calibrated:.2f}" in line


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_reasoning", DATA / "make_reasoning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_reasoning"] = module
    spec.loader.exec_module(module)
    return module


def test_reasoning_set_answers_recomputed_and_split() -> None:
    make = _generator()
    rows = [json.loads(line) for line in (DATA / "reasoning.jsonl").read_text().splitlines()]
    assert rows == make.items()  # the checked-in file is what the generator writes
    assert len(rows) >= 200 and len({r["id"] for r in rows}) == len(rows)
    by_hand = {  # worked out again here, not through the generator
        "buy_eat": lambda p: p["a"] + p["b"] - p["c"],
        "boxes_loose": lambda p: p["a"] * p["b"] + p["c"],
        "buy_buy": lambda p: p["a"] + p["b"] + p["c"],
        "eat_buy": lambda p: p["a"] - p["c"] + p["b"],
        "buy": lambda p: p["a"] + p["b"],
    }
    for row in rows:
        p = row["params"]
        expected = by_hand[row["family"]](p)
        assert row["answer"] == expected == make.answer(row["family"], p) and expected > 0
        assert all(str(v) in row["prompt"] for v in p.values())
        assert row["split"] == make.split_of(row["id"])
    splits = [r["split"] for r in rows]
    assert 0.3 < splits.count("tuning") / len(rows) < 0.5 and set(splits) == {"tuning", "heldout"}
    heldout = read_dataset(DATA / "reasoning.jsonl", Fields(), split="heldout")
    assert len(heldout) == splits.count("heldout") and all(it.gold for it in heldout)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_compare_with_pruning_on_the_real_engine(vllm_engine: Any) -> None:
    from nbest.orchestrator import Orchestrator

    items = read_dataset(DATA / "reasoning.jsonl", Fields(), split="tuning", limit=2)
    methods = [parse_method(m) for m in ("vote", "greedy", "vote+prune:0.1:2:4")]
    rankers = {"vote": Ranker([MajorityVote()]), "vote+prune:0.1:2:4": Ranker([MajorityVote()])}
    params = SamplingParams(temperature=0.8, top_logprobs=3, max_tokens=32, stop=["Question:"], seed=3)
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        report = await compare_methods(orch, items, methods, rankers, n=6, params=params, subsamples=3)
    shared, pruned = report.generations["shared"], report.generations["prune:0.1:2:4"]
    assert shared.greedy is not None and shared.prompts == pruned.prompts == 2
    for generation in (shared, pruned):  # every candidate's tokens are the engine's count
        assert generation.completion_tokens > 0 and generation.generate_s > 0
    full = {r.method: r for r in report.rows if r.n == 6}
    # keep 0.1: the threshold is near the better warm-up candidate's lowest 4-token group confidence, so most
    # of the four later candidates of each prompt stop early: fewer tokens than the same seeds unpruned
    assert full["vote+prune:0.1:2:4"].tokens < full["vote"].tokens
    assert all(len(item.correct) == 6 for item in pruned.items)  # pruned candidates stay listed
    assert all(0.0 <= (r.accuracy or 0.0) <= 1.0 and r.tokens > 0 for r in report.rows)
