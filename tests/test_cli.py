"""The command line: user mistakes are one line on stderr and exit 2, fast."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from nbest.cli import main

BAD_INPUT = [
    (["run", ""], "prompt must not be empty"),
    (["run", "hi", "-n", "0"], "n: Input should be greater than or equal to 1"),
    (["run", "hi", "-n", "65"], "at most 64 candidates"),
    (["run", "hi", "--temperature", "-1"], "temperature"),
    (["run", "hi", "--top-p", "0"], "top_p"),
    (["run", "hi", "--top-p", "1.5"], "top_p"),
    (["run", "hi", "--top-k", "0"], "top_k"),
    (["run", "hi", "--min-p", "2"], "min_p"),
    (["run", "hi", "--max-tokens", "0"], "max_tokens"),
    (["run", "hi", "--model", "./no/such/folder"], "neither an existing folder nor a Hugging Face id"),
    (["run", "hi", "--strategy", "nope"], "--strategy"),
    (["run", "hi", "--reranker", "nope"], "--reranker: unknown reranker 'nope'"),
    (["run", "hi", "--timeout", "-1"], "--timeout"),
    (["run", "hi", "-n", "many"], "'many' is not a valid integer"),
    (["run"], "Missing argument 'PROMPT'"),
    (["nope"], "No such command 'nope'"),
    (["models", "prepare", "other-model"], "only the embedded default"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUT)
def test_user_errors_are_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nbest: error: ")
    assert fragment in lines[0]


def test_the_installed_script_rejects_bad_input_fast_without_a_traceback() -> None:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nbest.cli", "run", "What is 2+2?", "--top-p", "7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nbest: error: top_p: Input should be less than or equal to 1 (got 7.0)"
    assert "Traceback" not in proc.stderr
    assert elapsed < 20  # no model was loaded (a start takes ~30 s on CPU)


def test_blocking_generate_rejects_bad_input_before_any_engine_starts() -> None:
    import nbest

    started = time.perf_counter()
    with pytest.raises(nbest.ConfigError, match="top_p"):
        nbest.generate("What is 2+2?", n=2, top_p=5)
    assert time.perf_counter() - started < 5  # no model was loaded
