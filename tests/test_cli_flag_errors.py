"""``--until``, ``--wave`` and ``--prune`` errors name the flag as typed, the same way on
every command that takes them: one line on stderr, exit 2, before any engine is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbest.cli import main
from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine

COMMANDS = {
    "run": ["run", "hi"],
    "batch": ["batch", "{tmp}/in.jsonl", "-o", "{tmp}/out.jsonl"],
    "eval": ["eval", "{tmp}/in.jsonl", "--answer-field", "answer"],
    "serve": ["serve", "--db", "{tmp}/p.db"],
}

CASES = [
    (["--wave", "0"], "--wave: must be a whole number >= 1 (got 0)"),
    (["--wave", "-3", "--until", "beta:0.9"], "--wave: must be a whole number >= 1 (got -3)"),
    (["--wave", "4"], "--wave: only used with a stopping rule (--until beta:0.95)"),
    (["--until", "beta:2"], "--until 'beta:2': threshold: must be a probability in (0, 1) (got 2.0)"),
    (["--until", "forever"], "--until 'forever': unknown stopping rule 'forever'; use beta:P"),
    (["--until", "esc:" + "9" * 70], "--until: at most 64 characters for a stopping rule (got 74 characters)"),
    (["--until", "beta:0.9", "--until", "esc:4"], "--until: give at most one stopping rule"),
    (["--prune", "2"], "--prune '2': prune.keep: must be a share in (0, 1] (got 2.0)"),
    (["--prune", "most"], "--prune 'most': expected KEEP[:WARMUP[:WINDOW]]"),
    (["--prune", "0." + "9" * 70], "--prune: at most 64 characters (got 72 characters); expected KEEP"),
]


def no_engine(options: EngineOptions) -> dict[str, Engine]:
    raise AssertionError(f"an engine was asked for ({options}) although the options were bad")


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("flags", "message"), CASES, ids=[" ".join(c[0])[:30] for c in CASES])
def test_flag_errors_name_the_flag_on_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flags: list[str], message: str
) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "q", "answer": "4"}) + "\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]] + flags
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=no_engine)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("nbest: error: ")
    assert err.removeprefix("nbest: error: ").startswith(message), err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--until", "esc:4", "--wave", "100"], "--wave: at most max_n = 64 candidates per wave (got 100)"),
        (["--max-n", "8", "--until", "esc:4", "--wave", "9"], "--wave: at most max_n = 8 candidates per wave (got 9)"),
        (["--max-n", "0"], "--max-n: Input should be greater than or equal to 1 (got 0)"),
        (["--prune", "0.9", "--max-top-logprobs", "2"], "--prune: pruning reads 5 alternatives per token"),
    ],
)
def test_serve_settings_errors_name_the_flag_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    """What only the server's settings can check (``--wave`` against ``--max-n`` ...) names
    the flag once, not the flag and then the settings field."""
    with pytest.raises(SystemExit) as info:
        main(["serve", "--db", str(tmp_path / "p.db"), *flags], engine_factory=no_engine)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.removeprefix("nbest: error: ").startswith(message), err
