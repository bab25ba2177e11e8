"""`nbest run --wave W --until RULE` and `--reranker judge` on the command line."""

from __future__ import annotations

import pytest

from nbest import ConfigError, rerankers
from nbest.cli import main
from tests.scripted import ScriptedEngine

BAD_INPUT = [
    (["run", "hi", "--until", "beta:"], "--until 'beta:': the threshold must be a number"),
    (["run", "hi", "--until", "beta:sure"], "the threshold must be a number"),
    (["run", "hi", "--until", "beta:1.2"], "must be a probability in (0, 1)"),
    (["run", "hi", "--until", "dirichlet:0.9:x"], "dirichlet takes a threshold, then optionally :weighted"),
    (["run", "hi", "--until", "confidence:0.9:most"], "use answer or candidate"),
    (["run", "hi", "--until", "betta:0.9"], "unknown stopping rule 'betta'"),
    (["run", "hi", "--until", "beta:0.9", "--until", "confidence:0.8"], "at most one stopping rule"),
    (["run", "hi", "--wave", "4"], "--wave: only used with a stopping rule"),
    (["run", "hi", "--wave", "4", "--stop", "\n"], "--wave: only used with a stopping rule"),
    (["run", "hi", "--wave", "0", "--until", "beta:0.9"], "--wave: must be a whole number >= 1 (got 0)"),
    (["run", "hi", "--wave", "x", "--until", "beta:0.9"], "'x' is not a valid integer"),
    (["run", "hi", "--reranker", "judgee"], "unknown reranker 'judgee'"),
    # --stop takes stop strings only: a rule there is a mistake, not a silent stop string
    (
        ["run", "hi", "--stop", "beta:0.95"],
        "--stop 'beta:0.95': use --until beta:0.95 for a stopping rule; --stop takes stop strings",
    ),
    (["run", "hi", "--stop", "\n", "--stop", "Confidence:0.8"], "use --until Confidence:0.8 for a stopping rule"),
    (["batch", "in.jsonl", "-o", "out.jsonl", "--stop", "dirichlet:0.9"], "use --until dirichlet:0.9"),
    (["eval", "set.jsonl", "--answer-field", "a", "--stop", "beta:0.95"], "use --until beta:0.95 for a stopping rule"),
    (["plan", "hi", "--stop", "beta:0.95"], "use --until beta:0.95 for a stopping rule"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUT)
def test_bad_stopping_input_is_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("nbest: error: ")
    assert fragment in err


def test_judge_spec_uses_the_engine_it_is_given() -> None:
    engine = ScriptedEngine()
    judge, weight = rerankers.parse_spec("judge=0.5", engine=engine)
    assert isinstance(judge, rerankers.LLMJudge) and judge.engine is engine and weight == 0.5
    custom, _ = rerankers.parse_spec("judge:Grade the arithmetic only.", engine=engine)
    assert isinstance(custom, rerankers.LLMJudge) and custom.rubric == "Grade the arithmetic only."
    with pytest.raises(ConfigError, match="judge: needs an engine"):
        rerankers.parse_spec("judge")


# On the real engine: tests/test_cli_engine.py::test_run_json_matches_the_documented_result runs
# `nbest run --wave 4 --until beta:0.9 --reranker judge --json` (one engine start for both).
