"""``nbest eval``: metrics on hand-made candidates (hand-checked numbers), plots, the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from nbest.cli import main
from nbest.engines.vllm import VLLMEngine
from nbest.errors import ConfigError
from nbest.evaluation import (
    EvalItem,
    EvalReport,
    EvalSample,
    Fields,
    Matcher,
    expected_calibration_error,
    generate_samples,
    read_dataset,
    score_samples,
    subsets,
    write_plots,
)
from nbest.evaluation.metrics import corpus_bleu, corpus_chrf
from nbest.orchestrator import Orchestrator
from nbest.rerankers import MajorityVote, MeanLogProb, Ranker
from nbest.types import Candidate, CandidateSpec, Prompt, Request, SamplingParams
from tests.batch_engines import seed_answers
from tests.scripted import ScriptedEngine, Step

PNG = b"\x89PNG\r\n\x1a\n"
DATA = Path(__file__).resolve().parent.parent / "examples" / "data"


def cand(index: int, text: str, mean_logprob: float, temperature: float = 1.0) -> Candidate:
    spec = CandidateSpec(index=index, params=SamplingParams(temperature=temperature, seed=index))
    return Candidate(
        index=index, spec=spec, text=text, num_tokens=4, mean_logprob=mean_logprob, cumulative_logprob=4 * mean_logprob
    )


def sample(ident: str, gold: str, cands: list[tuple[str, float]], greedy: str | None = None) -> EvalSample:
    item = EvalItem(id=ident, prompt=f"question {ident}", gold=[gold])
    return EvalSample(
        item=item,
        request=Request(id=ident, prompt=item.prompt, n=len(cands)),
        candidates=[cand(i, t, lp) for i, (t, lp) in enumerate(cands)],
        greedy=None if greedy is None else cand(0, greedy, -0.1, temperature=0.0),
    )


# Prompt A (gold 51): right, right, wrong with the best log-prob, no number.
# Prompt B (gold 7): right with the best log-prob, wrong, wrong, right.
SAMPLES = [
    sample("A", "51", [("It is 51.", -0.5), ("51", -1.0), ("52", -0.2), ("no idea", -2.0)], greedy="51"),
    sample("B", "7", [("7", -0.3), ("8", -0.4), ("8", -0.6), ("7", -0.9)], greedy="8"),
]
RANKERS = {"mean_logprob": Ranker([MeanLogProb()]), "vote": Ranker([MajorityVote(extract="number")])}


@pytest.fixture(scope="module")
def report() -> EvalReport:
    import anyio

    # subsamples=10 >= C(4, k) for every k: every subset is looked at, so the numbers are exact
    return anyio.run(lambda: score_samples(SAMPLES, RANKERS, matcher=Matcher("exact", "number"), subsamples=10, seed=0))


def test_levels_and_baselines(report: EvalReport) -> None:
    assert (report.task, report.prompts, report.n) == ("accuracy", 2, 4)
    assert [(lv.n, lv.subsets) for lv in report.levels] == [(1, 4), (2, 6), (4, 1)]
    assert report.random.accuracy == 0.5  # 2 of 4 right in both prompts
    assert report.greedy is not None and report.greedy.accuracy == 0.5  # A's greedy right, B's wrong
    assert [it.correct for it in report.items] == [[True, True, False, False], [True, False, False, True]]
    assert report.items[0].answers == ["51", "51", "52", None]


# (N, reranker, accuracy, oracle@N), worked out by hand over every subset:
# N=2, prompt A: log-prob picks the higher one: (0,1)✓ (0,2)✗ (0,3)✓ (1,2)✗ (1,3)✓ (2,3)✗ = 3/6;
#   vote: ties go to the lower index, an answer beats no answer: only (2,3) is wrong = 5/6.
# N=2, prompt B: log-prob (0,x)✓ ×3, (1,2) (1,3) (2,3) ✗ = 3/6; vote: the same 3/6.
# N=4: log-prob picks "52" in A (✗) and "7" in B (✓); vote: 51 has 2 of 4 votes in A (✓), 7 ties 8 in B and the
# lower index wins (✓).
ACCURACY = [
    (1, "mean_logprob", 0.5, 0.5),
    (1, "vote", 0.5, 0.5),
    (2, "mean_logprob", 0.5, 5 / 6),
    (2, "vote", (5 / 6 + 3 / 6) / 2, 5 / 6),
    (4, "mean_logprob", 0.5, 1.0),
    (4, "vote", 1.0, 1.0),
]


@pytest.mark.parametrize(("n", "name", "accuracy", "oracle"), ACCURACY)
def test_accuracy_and_oracle_by_hand(report: EvalReport, n: int, name: str, accuracy: float, oracle: float) -> None:
    level = next(lv for lv in report.levels if lv.n == n)
    assert level.rerankers[name].quality.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert level.oracle.accuracy == pytest.approx(oracle, abs=1e-12)


def test_calibration_error_at_full_n(report: EvalReport) -> None:
    top = report.levels[-1]
    # vote: both top answers hold half the votes and both are right -> |1 - 0.5|
    assert top.rerankers["vote"].ece == pytest.approx(0.5)
    # log-prob: softmax confidences; A's top answer "52" alone (wrong), B's "7" = b0 + b3 (right); both in bin [0.4, 0.5)
    conf_a = math.exp(-0.2) / sum(math.exp(v) for v in (-0.5, -1.0, -0.2, -2.0))
    conf_b = (math.exp(-0.3) + math.exp(-0.9)) / sum(math.exp(v) for v in (-0.3, -0.4, -0.6, -0.9))
    assert 0.4 <= conf_a < 0.5 and 0.4 <= conf_b < 0.5
    assert top.rerankers["mean_logprob"].ece == pytest.approx(abs(0.5 - (conf_a + conf_b) / 2))
    bins = top.rerankers["mean_logprob"].reliability
    assert [b.count for b in bins] == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0]


def test_diversity_at_full_n(report: EvalReport) -> None:
    d = report.levels[-1].diversity
    # A: it is 51 . / 51 / 52 / no idea -> 7 distinct of 8 tokens; B: 7 8 8 7 -> 2 of 4
    assert d.distinct_1 == pytest.approx((7 / 8 + 2 / 4) / 2)
    assert report.levels[0].diversity.self_bleu is None  # one candidate: no self-BLEU
    assert d.self_bleu is not None and 0 <= d.self_bleu <= 100


ECE_TABLE = [
    ([0.9, 0.9, 0.6, 0.6], [True, False, True, True], 0.4),
    ([1.0, 1.0], [True, True], 0.0),
    ([0.25, 0.75], [False, True], 0.25),
    ([], [], None),
]


@pytest.mark.parametrize(("confidences", "correct", "ece"), ECE_TABLE)
def test_expected_calibration_error(confidences: list[float], correct: list[bool], ece: float | None) -> None:
    assert expected_calibration_error(confidences, correct) == (None if ece is None else pytest.approx(ece))


def test_subsets_are_all_or_seeded_draws() -> None:
    assert subsets(4, 4, 5, "s") == [(0, 1, 2, 3)]
    drawn = subsets(16, 4, 5, "s")
    assert len(drawn) == 5 == len(set(drawn))
    assert drawn == subsets(16, 4, 5, "s") != subsets(16, 4, 5, "t")


MATCH_TABLE = [
    ("exact", "number", "So it costs $1,000.00 in all.", ["1000"], True),
    ("exact", "number", "12 apples, 13 pears", ["12"], False),  # the last number counts
    ("exact", "auto", r"\boxed{3/4}", ["0.75"], True),
    ("exact", "text", " Paris. ", ["paris", "Paris, France"], True),
    ("contains", "auto", "The capital is New York, of course.", ["new york"], True),
    ("contains", "auto", "It is 123.", ["12"], False),
    ("contains", "auto", "no answer", ["yes"], False),
    ("contains", "auto", "La capitale est Bogotá.", ["Bogota"], True),  # accents ignored
    ("contains", "auto", "It is SAO PAULO", ["São Paulo"], True),
    # auto: exact on a boxed answer or (numeric gold) the last number, the gold phrase in the text otherwise
    ("auto", "auto", "The capital city of Japan is Tokyo.", ["Tokyo"], True),
    ("auto", "auto", "Tokyo has 14 million people; it is the capital.", ["tokyo"], True),  # a number, but gold is a word
    ("auto", "auto", "The capital of Japan is Kyoto.", ["Tokyo"], False),
    ("auto", "auto", "Tokyoites live in Japan.", ["Tokyo"], False),  # word-bounded
    ("auto", "auto", "17 * 3 = 51, so 51.", ["51"], True),
    ("auto", "auto", "It is 51, no: 52.", ["51"], False),  # the last number counts, as in exact
    ("auto", "auto", "The answer is fifty-one, not 50.", ["51"], False),
    ("auto", "auto", r"Maybe Tokyo, but \boxed{Kyoto}", ["Tokyo"], False),  # a boxed answer is the answer
    ("auto", "auto", r"\boxed{3/4} of 12", ["0.75"], True),
    ("auto", "auto", "Two, i.e. 2.", ["2", "two"], True),
    ("auto", "choice", "I pick (B) over A.", ["B"], True),  # another extractor: its answer when it finds one
    ("auto", "choice", "I pick (A); B is wrong.", ["B"], False),
    ("auto", "choice", "Tokyo", ["Tokyo"], True),  # no letter found: the text is searched
    ("exact", "auto", "The capital city of Japan is Tokyo.", ["Tokyo"], False),  # why auto is the default
]


@pytest.mark.parametrize(("mode", "extract", "text", "gold", "right"), MATCH_TABLE)
def test_answer_matching(mode: str, extract: str, text: str, gold: list[str], right: bool) -> None:
    assert Matcher(mode, extract).correct(text, gold) is right  # type: ignore[arg-type]


def test_translation_scores_against_references() -> None:
    import anyio

    refs = ["Le chat dort.", "Il pleut."]
    cands = [[("Le chat dort.", -0.1), ("Un chien court.", -0.5)], [("Il neige.", -0.2), ("Il pleut.", -0.4)]]
    samples = [
        EvalSample(
            item=EvalItem(id=str(i), prompt="translate", reference=refs[i]),
            request=Request(prompt="translate", n=2),
            candidates=[cand(j, t, lp) for j, (t, lp) in enumerate(cs)],
        )
        for i, cs in enumerate(cands)
    ]
    report = anyio.run(lambda: score_samples(samples, {"mean_logprob": Ranker([MeanLogProb()])}, subsamples=4))
    assert report.task == "translation"
    top = report.levels[-1]
    assert top.oracle.chrf == pytest.approx(100.0) and top.oracle.bleu == pytest.approx(100.0)
    picked = ["Le chat dort.", "Il neige."]  # the higher log-prob in each
    assert top.rerankers["mean_logprob"].quality.chrf == pytest.approx(corpus_chrf(picked, refs))
    assert top.rerankers["mean_logprob"].quality.bleu == pytest.approx(corpus_bleu(picked, refs))
    columns = [[cands[0][j][0], cands[1][j][0]] for j in range(2)]
    assert report.random.chrf == pytest.approx((corpus_chrf(columns[0], refs) + corpus_chrf(columns[1], refs)) / 2)
    assert top.rerankers["mean_logprob"].ece is None


def test_plots_are_png_files(report: EvalReport, tmp_path: Path) -> None:
    paths = write_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["quality_vs_n.png", "reliability.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000


def test_dataset_fields_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(
        json.dumps({"question": "2+2?", "answer": 4})
        + "\n\n"
        + json.dumps({"id": "x", "question": "1+1?", "answer": ["2", "two"]})
        + "\n"
    )
    items = read_dataset(path, Fields(prompt="question"))
    assert [(it.id, it.prompt, it.gold) for it in items] == [("line-1", "2+2?", ["4"]), ("x", "1+1?", ["2", "two"])]
    path.write_text(json.dumps({"prompt": "2+2?"}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: no answer field 'answer' \(use --answer-field\)"):
        read_dataset(path, Fields())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"prompt": "caf\xe9", "answer": 4}', "line 2: not UTF-8 text (invalid continuation byte at byte 16)"),
        (b'{"prompt": "p", "answer": NaN}', "line 2: NaN is not a number here; numbers must be finite"),
        (b'{"prompt": "p", "answer": 1e999}', "line 2: 1e999 is out of range"),
        (b'{"prompt": "p", "answer": ' + b"9" * 5000 + b"}", "line 2: an integer with 5000 digits; at most 64 digits"),
        (b'{"prompt": "p", "answer": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "line 2: values nested too deeply"),
        # only the file may start with a byte-order mark
        (b'\xef\xbb\xbf{"prompt": "p", "answer": 1}', "line 2: invalid JSON (Unexpected UTF-8 BOM"),
    ],
)
def test_dataset_lines_that_cannot_be_read_name_their_line(tmp_path: Path, line: bytes, reason: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "2+2?", "answer": 4}\n' + line + b"\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {reason}")):
        read_dataset(path, Fields())
    path.write_bytes(path.read_bytes().split(b"\n")[0] + b"\n")  # a BOM at the start of the file is skipped
    assert [(it.id, it.prompt, it.gold) for it in read_dataset(path, Fields())] == [("line-1", "2+2?", ["4"])]


def test_shipped_example_sets_load() -> None:
    root = Path(__file__).resolve().parent.parent / "examples" / "data"
    arithmetic = read_dataset(root / "arithmetic.jsonl", Fields())
    assert len(arithmetic) == 20 and all(it.gold and it.gold[0].isdigit() for it in arithmetic)
    translation = read_dataset(root / "translation_en_fr.jsonl", Fields(answer=None, reference="reference", source="source"))
    assert len(translation) == 6 and all(it.reference and it.source for it in translation)


def test_cli_eval_on_a_scripted_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps({"id": f"g{g}", "prompt": f"pick {g}", "answer": g}) + "\n" for g in range(3)))
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "4", "--greedy", "--subsamples", "6", "--seed", "0",
            "--report", str(tmp_path / "report.json"), "--plots", str(tmp_path / "plots")]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=seed_answers)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "oracle@N" in out and "vote" in out
    report = EvalReport.model_validate_json((tmp_path / "report.json").read_text())
    # candidate i answers i mod 3 -> answers 0, 1, 2, 0: gold 0 has 2 of 4 right, gold 1 and 2 one each
    assert report.random.accuracy == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)
    assert report.greedy is not None and report.greedy.accuracy == pytest.approx(1 / 3)  # greedy = seed 0 -> "0"
    assert [lv.n for lv in report.levels] == [1, 2, 4]
    assert report.levels[-1].oracle.accuracy == 1.0
    assert set(report.levels[0].rerankers) == {"mean_logprob", "vote", "combined"}
    assert (tmp_path / "plots" / "reliability.png").read_bytes().startswith(PNG)


def test_cli_eval_until_stops_each_prompt_by_the_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"id": "easy", "prompt": "easy", "answer": 4}) + "\n"
                    + json.dumps({"id": "hard", "prompt": "hard", "answer": 1}) + "\n")  # fmt: skip

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        easy = isinstance(prompt, list) and prompt[-1].content == "easy"
        return Step(text=f"The answer is {4 if easy else (params.seed or 0) % 3}.", tokens=5)

    engine = ScriptedEngine(respond=respond)
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "8", "--seed", "0", "--until", "beta:0.95", "--wave", "4",
            "--reranker", "vote:number", "--report", str(tmp_path / "report.json")]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=lambda options: {"default": engine})
        raise SystemExit(0)
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "oracle@N" in out
    # "easy": four agreeing votes give 31/32 >= 0.95 after the first wave; "hard" (answers 0, 1, 2, 0, ...) never agrees
    assert "--until beta:0.95: 6.0 of 8 candidates per prompt on average" in err
    report = EvalReport.model_validate_json((tmp_path / "report.json").read_text())
    assert {item.id: len(item.correct) for item in report.items} == {"easy": 4, "hard": 8}
    assert report.n == 8 and [lv.n for lv in report.levels] == [1, 2, 4, 8]
    assert report.random.accuracy == pytest.approx((4 / 4 + 3 / 8) / 2)
    assert report.levels[-1].oracle.accuracy == 1.0


def test_cli_eval_stop_takes_no_stopping_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n")
    with pytest.raises(SystemExit) as info:
        main(["eval", str(data), "--answer-field", "answer", "--stop", "beta:0.95"], engine_factory=seed_answers)
    assert info.value.code == 2
    assert "use --until beta:0.95 for a stopping rule; --stop takes stop strings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "give --answer-field (accuracy) or --reference-field"),
        (["--answer-field", "answer", "--reference-field", "ref"], "not both"),
        (["--answer-field", "gold"], "line 1: no answer field 'gold'"),
        (["--answer-field", "answer", "--match", "fuzzy"], "'fuzzy' is not one of"),
        (["--answer-field", "answer", "--extract", "nope"], "unknown extractor 'nope'"),
        (["--answer-field", "answer", "--subsamples", "0"], "--subsamples"),
        (["--answer-field", "answer", "--report", "{tmp}/missing/report.json"], "--report: folder {tmp}/missing does not exist"),
        (["--answer-field", "answer", "--report", "{tmp}"], "--report"),
        (["--answer-field", "answer", "--plots", "{tmp}/missing/plots"], "--plots: folder {tmp}/missing does not exist"),
        (["--answer-field", "answer", "--plots", "{tmp}/set.jsonl"], "--plots"),
    ],
)
def test_cli_eval_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str) -> None:
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n")
    with pytest.raises(SystemExit) as info:
        main(["eval", str(data), *[arg.replace("{tmp}", str(tmp_path)) for arg in extra]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment.replace("{tmp}", str(tmp_path)) in err, err


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_end_to_end_eval_on_the_real_engine(vllm_engine: VLLMEngine, tmp_path: Path) -> None:
    items = read_dataset(DATA / "arithmetic.jsonl", Fields(), limit=5)
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        samples = await generate_samples(
            orch, items, n=4, params=SamplingParams(temperature=0.8, max_tokens=48, seed=1), greedy=True, concurrency=5
        )
    assert [s.item.id for s in samples] == [f"arith-{i:02d}" for i in range(1, 6)]
    for s in samples:
        assert len(s.candidates) == 4 and all(c.ok and c.text for c in s.candidates)
        assert s.greedy is not None and s.greedy.spec.params.temperature == 0.0
        assert len({c.spec.params.seed for c in s.candidates}) == 4
    rankers = {"mean_logprob": Ranker([MeanLogProb()]), "vote": Ranker([MajorityVote(extract="number")])}
    report = await score_samples(samples, rankers, matcher=Matcher("exact", "number"), subsamples=6)
    assert [lv.n for lv in report.levels] == [1, 2, 4]
    assert report.greedy is not None and report.greedy.accuracy is not None
    for level in report.levels:  # every subset is looked at (C(4, k) <= 6): exact expectations
        assert level.oracle.accuracy is not None
        for result in level.rerankers.values():
            assert result.quality.accuracy is not None and result.quality.accuracy <= level.oracle.accuracy + 1e-12
            assert result.ece is not None and 0.0 <= result.ece <= 1.0
            assert result.auroc is None or 0.0 <= result.auroc <= 1.0
            assert result.tokens > 0 and result.engine_s is None  # no generation time given
    first = report.levels[0]
    assert all(r.quality.accuracy == pytest.approx(report.random.accuracy) for r in first.rerankers.values())
    oracles = [lv.oracle.accuracy for lv in report.levels]
    assert oracles == sorted(oracles)  # more candidates, more chances
    assert report.completion_tokens > 0
    assert report.levels[-1].rerankers["vote"].tokens == pytest.approx(
        sum(c.num_tokens for s in samples for c in s.candidates) / len(samples)
    )
    paths = write_plots(report, tmp_path)
    assert all(p.read_bytes().startswith(PNG) for p in paths)


def test_a_dataset_line_over_the_limit_names_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbest.evaluation import dataset

    monkeypatch.setattr(dataset, "MAX_LINE_BYTES", 40)
    path = tmp_path / "set.jsonl"
    path.write_bytes(b'{"prompt": "2+2?", "answer": 4}\n{"prompt": "' + b"x" * 100 + b'", "answer": 1}\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 2: a line of 128 bytes; at most 40")):
        read_dataset(path, Fields())


ARITHMETIC_TEXTS = [
    "17 * 3 = 51, so the answer is 51.",
    "It is 52.",
    "The answer is fifty-one.",
    r"So \boxed{51}.",
    "$1,000.00 in all",
    "3/4 of the cake",
    "",
    "-3.5 degrees",
    "51 apples, minus 3 = 48",
]


@pytest.mark.parametrize("gold", ["51", "1000", "0.75", "-3.5", "48"])
def test_auto_matching_scores_numeric_answers_as_exact_did(gold: str) -> None:
    for text in ARITHMETIC_TEXTS:
        assert Matcher().correct(text, [gold]) is Matcher("exact", "auto").correct(text, [gold]), text


def test_auroc_prr_and_cost_by_hand(report: EvalReport) -> None:
    first, top = report.levels[0], report.levels[-1]
    # N=1: one candidate per subset, confidence 1.0 for all: no discrimination (ties count half, rejection is random)
    assert (first.rerankers["mean_logprob"].auroc, first.rerankers["mean_logprob"].prr) == (0.5, 0.0)
    # N=4, log-prob: A's wrong "52" (conf ~0.42) is less confident than B's right "7" (~0.48): a perfect separation
    assert (top.rerankers["mean_logprob"].auroc, top.rerankers["mean_logprob"].prr) == (1.0, 1.0)
    # N=4, vote: both answers right: undefined
    assert (top.rerankers["vote"].auroc, top.rerankers["vote"].prr) == (None, None)
    # every candidate has 4 tokens: N candidates cost 4N per prompt; the greedy ones 4 each
    assert [lv.rerankers["vote"].tokens for lv in report.levels] == [4.0, 8.0, 16.0]
    assert report.completion_tokens == 2 * 4 * 4 + 2 * 4 and report.greedy_tokens == 4.0
    assert top.rerankers["vote"].engine_s is None  # generation time unknown
    assert report.warnings == [] and report.match == "exact"


def test_engine_time_is_shared_by_tokens() -> None:
    import anyio

    report = anyio.run(lambda: score_samples(SAMPLES, RANKERS, subsamples=10, generate_s=10.0))
    assert report.generate_s == 10.0 and report.match == "auto" and report.extract == "auto"
    # 40 tokens in 10 s; N=4 uses 16 per prompt, 32 of 40
    assert [lv.rerankers["mean_logprob"].engine_s for lv in report.levels] == pytest.approx([2.0, 4.0, 8.0])
    assert [it.correct for it in report.items] == [[True, True, False, False], [True, False, False, True]]  # as exact


def test_report_table_shows_discrimination_cost_and_warnings(report: EvalReport) -> None:
    from rich.console import Console

    from nbest.evaluation import report_table

    console = Console(record=True, width=220)
    console.print(report_table(report.model_copy(update={"warnings": ["--match exact judged no candidate right"]})))
    text = console.export_text()
    for header in ("ECE", "AUROC", "PRR", "tokens/prompt", "engine s", "oracle@N"):
        assert header in text
    assert "1.00" in text and "warning: --match exact judged no candidate right" in text


CAPITALS = {"Japan": "Tokyo", "France": "Paris", "Peru": "Lima"}


def capitals(options: object) -> dict[str, ScriptedEngine]:
    """Even seeds answer in a sentence with the right capital, odd seeds with a wrong one."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        country = str(prompt[-1].content if isinstance(prompt, list) else prompt).split()[-1].rstrip("?")
        city = CAPITALS[country] if (params.seed or 0) % 2 == 0 else "Berlin"
        return Step(text=f"The capital city of {country} is {city}.", tokens=9)

    return {"default": ScriptedEngine(respond=respond)}


@pytest.mark.parametrize("match", [None, "contains", "exact"])
def test_cli_eval_on_sentence_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str], match: str | None) -> None:
    data = tmp_path / "capitals.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is the capital of {c}?", "answer": a}) + "\n" for c, a in CAPITALS.items())
    )
    argv = ["eval", str(data), "--answer-field", "answer", "-n", "4", "--greedy", "--seed", "0",
            "--report", str(tmp_path / "report.json"), *(["--match", match] if match else [])]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=capitals)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    report = EvalReport.model_validate_json((tmp_path / "report.json").read_text())
    assert report.match == (match or "auto")
    if match == "exact":  # exact on the whole sentence: nothing is right, and the run says so, loudly
        assert report.random.accuracy == 0.0 and report.levels[-1].oracle.accuracy == 0.0
        assert len(report.warnings) == 1
        assert "gold answer appears in 9 of 15 candidates (3 of 3 prompts" in report.warnings[0]
        assert "nbest eval: warning: --match exact judged no candidate right" in err
        assert "warning: --match exact" in out  # the table's caption
        return
    assert report.warnings == [] and "warning" not in err
    assert report.random.accuracy == 0.5  # seeds 0, 2 of 0..3 answer right
    assert report.greedy is not None and report.greedy.accuracy == 1.0  # the greedy request has seed 0
    assert report.levels[-1].oracle.accuracy == 1.0
    assert all(r.tokens == 9 * lv.n for lv in report.levels for r in lv.rerankers.values())
    assert report.completion_tokens == 3 * 5 * 9 and report.generate_s > 0
    assert all(r.engine_s is not None and r.engine_s > 0 for r in report.levels[-1].rerankers.values())
