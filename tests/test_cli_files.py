"""Files the command line reads or will write: each unusable one is a one-line error
(exit 2) before any engine is built or any work is done."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nbest.cli import main
from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine
from nbest.server.prefs import PreferenceStore
from nbest.types import Candidate, CandidateSpec, Result, SamplingParams


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str], **kwargs: object) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv, **kwargs)  # type: ignore[arg-type]
        raise SystemExit(0)
    err = capsys.readouterr().err
    return int(info.value.code or 0), err


@pytest.mark.parametrize("command", [["run", "hi"], ["batch", "{tmp}/in.jsonl", "-o", "{tmp}/out.jsonl"]])
def test_an_engines_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "engines.yaml").write_bytes(b"default:\n  kind: vllm \xff\n")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in command] + ["--engines", str(tmp_path / "engines.yaml")]
    code, err = _exit(argv, capsys)
    assert code == 2
    assert err == f"nbest: error: engines file {tmp_path / 'engines.yaml'} is not UTF-8 text (invalid start byte at byte 22)\n"


def test_eval_paths_are_checked_before_any_engine_is_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "set.jsonl").write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n")
    built: list[EngineOptions] = []

    def factory(options: EngineOptions) -> dict[str, Engine]:
        built.append(options)
        raise AssertionError("no engine may be built")

    report = tmp_path / "typo" / "report.json"
    argv = ["eval", str(tmp_path / "set.jsonl"), "--answer-field", "answer", "--report", str(report)]
    code, err = _exit(argv, capsys, engine_factory=factory)
    assert (code, err, built) == (2, f"nbest: error: --report: folder {report.parent} does not exist\n", [])


def _one_choice(path: Path) -> None:
    candidates = [Candidate(index=i, rank=i + 1, text=t, spec=CandidateSpec(index=i, params=SamplingParams()))
                  for i, t in enumerate(["a", "b"])]  # fmt: skip
    with PreferenceStore(path) as store:
        store.record(Result(id="r", prompt="p", n=2, candidates=candidates, best=candidates[0]), chosen=1)


def test_prefs_db_must_be_a_preference_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.close()
    before = other.read_bytes()
    for db in (str(other), f"sqlite:///{other}"):
        code, err = _exit(["prefs", "stats", "--db", db], capsys)
        assert (code, err) == (
            2,
            f"nbest: error: --db: {other} is a SQLite database but not a preference log (no 'choices' table)\n",
        )
    assert other.read_bytes() == before  # read only: no table was added to someone else's database
    text = tmp_path / "notes.db"
    text.write_text("just some notes\n" * 20)
    code, err = _exit(["prefs", "export", "-", "--db", f"sqlite:///{text}"], capsys)
    assert code == 2 and "is not a SQLite database" in err and err.count("\n") == 1
    good = tmp_path / "prefs.db"
    _one_choice(good)
    code, err = _exit(["prefs", "stats", "--db", str(good), "--json"], capsys)
    assert code == 0, err
