"""``nbest batch``: input parsing, resumable output, errors file, progress, crash recovery."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from nbest.batch import check_input, open_output, read_input, run_batch, scan_output
from nbest.cli import main
from nbest.errors import ConfigError, EngineDeadError
from nbest.orchestrator import Orchestrator
from nbest.types import Prompt, Request, SamplingParams
from tests.batch_engines import same_answer, slow_scripted
from tests.scripted import ScriptedEngine, Step

ROOT = Path(__file__).resolve().parent.parent
BASE = Request(prompt="(per line)", n=3, params=SamplingParams(temperature=0.7, max_tokens=32))


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def read_results(path: Path) -> list[dict[str, object]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_lines_become_requests_with_their_overrides(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "prompt": "What is 2+2?"},
            "",
            {
                "id": 7,
                "messages": [{"role": "user", "content": "Hi"}],
                "n": 5,
                "temperature": 0.2,
                "seed": 3,
                "system": "Be brief",
            },
            {"prompt": "no id", "stop": "\n", "metadata": {"gold": "4"}},
        ],
    )
    parsed = read_input(path, BASE, max_n=64)
    assert parsed.bad == []
    a, b, c = parsed.requests
    assert (a.id, a.prompt, a.n, a.params.temperature, a.params.max_tokens) == ("a", "What is 2+2?", 3, 0.7, 32)
    assert (b.id, b.n, b.params.temperature, b.params.seed, b.system) == ("7", 5, 0.2, 3, "Be brief")
    assert b.params.max_tokens == 32  # not overridden: the run's setting
    assert (c.id, c.params.stop, c.metadata) == ("line-4", ["\n"], {"gold": "4"})


BAD_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"id": "x"}), "give exactly one of 'prompt'"),
    (json.dumps({"id": "x", "prompt": "p", "messages": [{"role": "user", "content": "p"}]}), "give exactly one of"),
    (json.dumps({"id": "x", "prompt": "   "}), "prompt must not be empty"),
    (json.dumps({"id": "x", "prompt": "p", "temperature": -1}), "temperature"),
    (json.dumps({"id": "x", "prompt": "p", "top_p": 0}), "top_p: Input should be greater than 0 (got 0)"),
    (json.dumps({"id": "x", "prompt": "p", "presence_penalty": 3}), "presence_penalty: Input should be less than or equal to 2"),
    (json.dumps({"id": "x", "prompt": "p", "stop": [""]}), "stop: stop strings must not be empty"),
    (json.dumps({"id": "x", "prompt": "p", "n": 65}), "at most 64"),
    (json.dumps({"id": "x", "prompt": "p", "colour": "red"}), "colour"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_lines_are_reported_with_number_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": "ok", "prompt": "fine"}, line, {"id": "ok2", "prompt": "fine"}])
    parsed = read_input(path, BASE, max_n=64)
    assert [r.id for r in parsed.requests] == ["ok", "ok2"]
    assert len(parsed.bad) == 1
    assert parsed.bad[0].line == 2
    assert reason in parsed.bad[0].reason


def test_duplicate_ids_are_rejected_naming_both_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}]
    )
    with pytest.raises(ConfigError, match=r"duplicate id 'a' on lines 1 and 3"):
        read_input(path, BASE, max_n=64)


def _result_line(ident: str) -> str:
    return json.dumps({"id": ident, "prompt": "p", "n": 1, "candidates": []})


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = _result_line("a") + "\n" + _result_line("b") + "\n"
    out.write_text(good + _result_line("c")[:17])
    resume = scan_output(out)
    assert (resume.done, resume.torn, resume.good_bytes) == ({"a", "b"}, True, len(good.encode()))
    log, resume = open_output(out)
    log.close()
    assert out.read_text() == good


def test_an_unterminated_last_line_is_torn_even_if_it_parses(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_result_line("a") + "\n" + _result_line("b"))
    resume = scan_output(out)
    assert (resume.done, resume.torn) == ({"a"}, True)


def test_a_corrupt_line_before_the_last_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_result_line("a") + "\n" + "garbage\n" + _result_line("b") + "\n")
    with pytest.raises(ConfigError, match=r"line 2 of .* is not an nbest result"):
        open_output(out)


@pytest.mark.asyncio
async def test_run_batch_appends_every_result_once(tmp_path: Path, scripted: ScriptedEngine) -> None:
    requests = [Request(id=f"q{i}", prompt=f"p{i}", n=2, params=SamplingParams(seed=10 * i)) for i in range(6)]
    out = tmp_path / "out.jsonl"
    log, _ = open_output(out)
    seen: list[int] = []
    with log:
        async with Orchestrator(scripted) as orch:
            stats = await run_batch(orch, requests, log, concurrency=2, on_result=lambda r, s: seen.append(s.done))
    results = read_results(out)
    assert sorted(str(r["id"]) for r in results) == [f"q{i}" for i in range(6)]
    assert (stats.done, stats.candidates, stats.tokens) == (6, 12, 6 * 2 * 4)
    assert seen == [1, 2, 3, 4, 5, 6]
    by_id = {r["id"]: r for r in results}
    assert {c["text"] for c in by_id["q3"]["candidates"]} == {"answer 30", "answer 31"}  # type: ignore[index, union-attr]


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("NBEST_TEST_DELAY", "0")
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=slow_scripted)
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_cli_duplicate_ids_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    code = _cli(["batch", str(inp), "-o", str(tmp_path / "out.jsonl")], monkeypatch)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == ["nbest: error: input: duplicate id 'a' on lines 1 and 2; ids must be unique"]
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--temperature", "-1"], "temperature"),
        (["--reranker", "nope"], "unknown reranker 'nope'"),
        (["--concurrency", "0"], "--concurrency: must be at least 1"),
        (["-n", "65"], "at most 64"),
    ],
)
def test_cli_bad_options_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    code = _cli(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), *extra], monkeypatch)
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_cli_missing_input_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli(["batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl")], monkeypatch)
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_writes_results_errors_file_and_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[object] = [{"id": f"q{i}", "prompt": f"what is {i}?"} for i in range(5)]
    lines[2] = "{broken"
    inp = write_lines(tmp_path / "in.jsonl", [*lines, {"id": "hot", "prompt": "x", "top_p": 3}])
    out = tmp_path / "out.jsonl"
    code = _cli(["batch", str(inp), "-o", str(out), "-n", "2", "--seed", "1"], monkeypatch)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(str(r["id"]) for r in read_results(out)) == ["q0", "q1", "q3", "q4"]
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["reason"].split(" ")[0]) for e in errors] == [(3, "invalid"), (6, "top_p:")]
    assert "2 bad input line(s) skipped" in err
    assert "nbest batch: 4/4 prompts" in err and "candidates/s" in err and "tokens/s" in err and "ETA" in err
    # a rerun finds everything done
    assert _cli(["batch", str(inp), "-o", str(out)], monkeypatch) == 0
    assert "4 prompt(s) already in" in capsys.readouterr().err
    assert len(read_results(out)) == 4


def _spawn(inp: Path, out: Path, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "NBEST_TEST_DELAY": str(delay), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.cli_with_engine", "slow_scripted"]
    argv += ["batch", str(inp), "-o", str(out), "-n", "2", "--concurrency", "3"]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(out: Path, count: int, proc: subprocess.Popen[str], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {count} lines in {out} after {limit} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_without_duplicate_missing_or_corrupt_lines(tmp_path: Path, sig: signal.Signals) -> None:
    ids = [f"q{i}" for i in range(30)]
    inp = write_lines(tmp_path / "in.jsonl", [{"id": i, "prompt": f"question {i}"} for i in ids])
    out = tmp_path / "out.jsonl"
    proc = _spawn(inp, out, delay=0.1)
    _wait_for_lines(out, 4, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    first = read_results(out)  # every line complete: the kill lost only prompts in flight
    assert 4 <= len(first) < len(ids)
    if sig == signal.SIGKILL:
        assert err == ""
        # a crash in the middle of a write leaves a torn line; simulate one
        with out.open("a") as f:
            f.write(_result_line("q29")[:25])
    else:
        assert err.strip().endswith("nbest: error: interrupted")
    proc = _spawn(inp, out, delay=0.0)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{len(first)} prompt(s) already in" in err
    assert ("torn last line" in err) == (sig == signal.SIGKILL)
    results = read_results(out)
    got = [str(r["id"]) for r in results]
    assert sorted(got) == sorted(ids)  # none missing, none twice
    assert got[: len(first)] == [r["id"] for r in first]  # the first run's lines untouched
    assert all(len(r["candidates"]) == 2 for r in results)  # type: ignore[arg-type]


def test_cli_adaptive_stopping_applies_to_every_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": "What is 2 + 2?"} for i in range(3)])
    out = tmp_path / "out.jsonl"
    argv = ["batch", str(inp), "-o", str(out), "-n", "16", "--seed", "1", "--wave", "4", "--until", "beta:0.9"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--reranker", "vote:number"], engine_factory=same_answer)
        raise SystemExit(0)
    assert info.value.code == 0, capsys.readouterr().err
    results = read_results(out)
    assert [r["samples_used"] for r in results] == [4, 4, 4]  # four agreeing votes pass Beta(0.9)
    assert all(len(r["candidates"]) == 4 for r in results)  # type: ignore[arg-type]


def test_cli_wave_without_a_rule_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    assert _cli(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--wave", "4"], monkeypatch) == 2
    assert "wave" in capsys.readouterr().err


def test_a_byte_order_mark_and_surrogate_pairs_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\r\n{"id": "b", "prompt": "smile \\ud83d\\ude00"}\n')
    parsed = read_input(path, BASE, max_n=64)
    assert parsed.bad == []
    assert [(r.id, r.prompt) for r in parsed.requests] == [("a", "x"), ("b", "smile \N{GRINNING FACE}")]


LIMIT_LINES = [
    (b'{"id": "x", "prompt": "p", "seed": ' + b"9" * 5000 + b"}", "an integer with 5000 digits; at most 64 digits"),
    (b'{"id": "x", "prompt": "p", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply; at most 32"),
    (b'{"id": "x", "prompt": "p", "metadata": {"a": ' + b"[" * 32 + b"]" * 32 + b"}}", "nested too deeply"),
    (b'{"id": "x", "prompt": "p", "metadata": {"a": -Infinity}}', "-Infinity is not a number here"),
    (b'{"id": "x", "prompt": "p", "temperature": 1e999}', "1e999 is out of range; numbers must be finite"),
    (b'{"id": "x", "prompt": "p", "metadata": {"\\udc00": 1}}', "lone UTF-16 surrogate (\\udc00)"),
    (b'{"id": "x", "prompt": "caf\xe9"}', "not UTF-8 text (invalid continuation byte at byte 27)"),
]


@pytest.mark.parametrize(("line", "reason"), LIMIT_LINES)
def test_lines_over_a_limit_are_bad_lines(tmp_path: Path, line: bytes, reason: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "ok", "prompt": "fine"}\n' + line + b'\n{"id": "ok2", "prompt": "fine"}\n')
    parsed = read_input(path, BASE, max_n=64)
    assert [r.id for r in parsed.requests] == ["ok", "ok2"]
    assert [(b.line, reason in b.reason) for b in parsed.bad] == [(2, True)], parsed.bad
    assert len(parsed.bad[0].text) <= 200


def test_a_line_at_the_limits_is_accepted_and_its_result_written(tmp_path: Path) -> None:
    nested: object = 1
    for _ in range(30):  # the line is level 1, metadata 2, the lists 3 to 32
        nested = [nested]
    line = {"id": "deep", "prompt": "p", "seed": int("9" * 18), "metadata": {"a": nested, "b": 10**63}}
    inp = write_lines(tmp_path / "in.jsonl", [line])
    out = tmp_path / "out.jsonl"
    main(["batch", str(inp), "-o", str(out), "-n", "1"], engine_factory=same_answer)
    (result,) = read_results(out)
    assert result["metadata"] == line["metadata"]


@pytest.mark.parametrize("max_n", [0, 8.5, "8", True])
def test_max_n_must_be_a_whole_number(tmp_path: Path, max_n: object) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    with pytest.raises(ConfigError, match="max_n: must be a whole number of at least 1"):
        read_input(path, BASE, max_n=max_n)  # type: ignore[arg-type]


def test_resume_reads_the_output_one_line_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    line = json.dumps({"id": "{}", "prompt": "p" * 4000, "n": 1, "candidates": []})
    out.write_text("".join(line.replace("{}", f"q{i}") + "\n" for i in range(2000)))  # 8 MB
    tracemalloc.start()
    try:
        resume = scan_output(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(resume.done), resume.torn, resume.good_bytes) == (2000, False, out.stat().st_size)
    assert peak < out.stat().st_size / 10, f"peak {peak} bytes while reading {out.stat().st_size}"


def test_one_writer_per_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(_result_line("a") + "\n" + _result_line("b")[:9])  # a torn line: not cut while another writes
    first, resume = open_output(out)
    assert resume.torn
    with first, pytest.raises(ConfigError, match=rf"{out} is being written by process {os.getpid()}"):
        open_output(out)
    assert out.read_text() == _result_line("a") + "\n"
    second, resume = open_output(out)  # the lock went with the first
    second.close()
    assert resume.done == {"a"}


def test_cli_a_second_run_on_the_same_output_exits_2_naming_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"q{i}" for i in range(12)]
    inp = write_lines(tmp_path / "in.jsonl", [{"id": i, "prompt": i} for i in ids])
    out = tmp_path / "out.jsonl"
    proc = _spawn(inp, out, delay=0.2)
    try:
        _wait_for_lines(out, 1, proc)
        code = _cli(["batch", str(inp), "-o", str(out)], monkeypatch)
        err = capsys.readouterr().err
        assert code == 2
        assert err.strip().splitlines() == [
            f"nbest: error: output: {out} is being written by process {proc.pid} (another nbest batch?); "
            "wait for it to finish, or write to another file"
        ]
    finally:
        _, first_err = proc.communicate(timeout=60)
    assert proc.returncode == 0, first_err
    assert sorted(str(r["id"]) for r in read_results(out)) == sorted(ids)  # the first run was not disturbed


def test_cli_checks_the_errors_folder_before_reading_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", ["{broken", {"id": "a", "prompt": "x"}])
    errors = tmp_path / "missing" / "errors.jsonl"
    code = _cli(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--errors", str(errors)], monkeypatch)
    assert code == 2
    assert capsys.readouterr().err == f"nbest: error: --errors: folder {errors.parent} does not exist\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_a_line_longer_than_the_limit_is_a_bad_line_and_the_next_ones_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbest.batch import inputs

    monkeypatch.setattr(inputs, "MAX_LINE_BYTES", 40)
    exact = b'{"id": "a", "prompt": "' + b"x" * 15 + b'"}'
    assert len(exact) == 40
    path = tmp_path / "in.jsonl"
    path.write_bytes(exact + b"\n" + b'{"id": "b", "prompt": "' + b"y" * 200 + b'"}\n{"id": "c", "prompt": "z"}\n' + exact[:-2])
    parsed = inputs.read_input(path, Request(prompt="-"), max_n=8)
    assert [r.id for r in parsed.requests] == ["a", "c"]
    assert [(b.line, b.reason) for b in parsed.bad] == [
        (2, "a line of 226 bytes; at most 40"),
        (4, "invalid JSON (Unterminated string starting at column 23)"),  # the last line, cut short, has no newline
    ]


# -- reading a file of any size: checked line by line, then parsed again as the run takes it ----------


class _Recorder:
    """An engine factory that keeps the engines it built, to see what they were asked."""

    def __init__(self) -> None:
        self.engines: list[ScriptedEngine] = []

    def __call__(self, options: object) -> dict[str, ScriptedEngine]:
        engine = ScriptedEngine()
        self.engines.append(engine)
        return {"default": engine}

    @property
    def prompts(self) -> list[str]:
        return sorted({str(call.prompt[-1].content) for e in self.engines for call in e.history})  # type: ignore[index, union-attr]


def _run(argv: list[str], engine_factory: object) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=engine_factory)  # type: ignore[arg-type]
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_cli_a_duplicate_id_on_the_last_line_stops_the_run_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[object] = [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(2000)]
    lines[5] = "{broken"  # a bad line: its report must not be left behind by a refused run
    inp = write_lines(tmp_path / "in.jsonl", [*lines, {"id": "q7", "prompt": "again"}])
    engines = _Recorder()
    code = _run(["batch", str(inp), "-o", str(tmp_path / "out.jsonl")], engines)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "nbest: error: input: duplicate id 'q7' on lines 8 and 2001; ids must be unique"
    ]
    assert engines.prompts == []  # nothing generated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no OUT, no errors file, nothing partial


def test_the_duplicate_named_is_the_first_line_whose_id_an_earlier_one_has(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d", "c", "b", "a", "b"]  # "c" repeats first (line 5), then "b" and "a"
    path = write_lines(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in ids])
    with pytest.raises(ConfigError, match=r"duplicate id 'c' on lines 3 and 5; ids must be unique") as info:
        read_input(path, BASE, max_n=64)
    assert (info.value.parameter, info.value.value) == ("id", "c")
    bad_first = write_lines(tmp_path / "two.jsonl", ["{broken", {"prompt": "x"}, {"id": "line-2", "prompt": "y"}])
    with pytest.raises(ConfigError, match=r"duplicate id 'line-2' on lines 2 and 3"):  # the default id counts
        read_input(bad_first, BASE, max_n=64)


def test_cli_resume_generates_only_the_ids_not_yet_in_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    first = write_lines(tmp_path / "first.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in (0, 2, 4)])
    assert _run(["batch", str(first), "-o", str(out), "-n", "1"], _Recorder()) == 0
    capsys.readouterr()
    inp = write_lines(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(6)])
    engines = _Recorder()
    assert _run(["batch", str(inp), "-o", str(out), "-n", "1"], engines) == 0
    err = capsys.readouterr().err
    assert engines.prompts == ["p1", "p3", "p5"]  # the done ones were not generated again
    assert "3 prompt(s) already in" in err and "nbest batch: 3/3 prompts" in err
    assert sorted(str(r["id"]) for r in read_results(out)) == [f"q{i}" for i in range(6)]


def test_already_done_counts_the_files_ids_an_output_holds(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": "x"} for i in range(50)])
    checked = check_input(path, BASE, max_n=64)
    assert checked.already_done(set()) == 0
    assert checked.already_done({"q3", "q49", "other", "q"}) == 2
    assert [r.id for r in checked.requests(skip={"q3", "q49"})] == [f"q{i}" for i in range(50) if i not in (3, 49)]


def test_a_file_changed_after_it_was_checked_is_refused_when_read_again(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    checked = check_input(path, BASE, max_n=64)
    before = path.stat()
    write_lines(path, [{"id": "a", "prompt": "x"}, {"id": "c", "prompt": "y"}])  # same size, another id
    with pytest.raises(ConfigError, match=r"changed after it was checked \(its size, time or inode\)"):
        list(checked.requests())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the time put back: the id still tells
    with pytest.raises(ConfigError, match=r"changed after it was checked \(line 2 is not the line checked\)"):
        list(checked.requests())


def test_a_line_whose_plan_cannot_be_served_is_refused_naming_it(tmp_path: Path, scripted: ScriptedEngine) -> None:
    from nbest.batch import plan_check

    path = write_lines(tmp_path / "in.jsonl", ["{broken", {"id": "a", "prompt": "x", "n": 4}, {"id": "b", "prompt": "y", "n": 5}])
    check = plan_check(Orchestrator(scripted, max_n=4))  # not started: only planned
    seen: list[int] = []
    with pytest.raises(ConfigError, match=r"^input: line 3 \(id 'b'\): n: at most 4 candidates per prompt \(got 5\)$"):
        check_input(path, BASE, max_n=64, check=check, on_bad=lambda bad: seen.append(bad.line))
    assert seen == [1] and scripted.history == []


@pytest.mark.parametrize("ray", [False, True])
def test_cli_a_plan_the_engines_cannot_serve_stops_the_run_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ray: bool
) -> None:
    """With --ray the lines are checked as a replica will check them (on an
    orchestrator built from the replicas' spec, its engines from an importable
    factory), before a cluster starts."""
    inp = write_lines(tmp_path / "in.jsonl", ["{broken", {"id": "a", "prompt": "x"}])
    engines = _Recorder()
    argv = ["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--strategy", '{"kind": "fixed", "engine": "elsewhere"}']
    code = _run([*argv, "--ray"], slow_scripted) if ray else _run(argv, engines)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "nbest: error: input: line 2 (id 'a'): " in err, err
    assert "unknown engine 'elsewhere'" in err
    assert engines.prompts == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no OUT, no errors file, nothing partial


@pytest.mark.asyncio
async def test_run_batch_takes_an_iterator_one_request_at_a_time(tmp_path: Path, scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(text=f"answer {params.seed}", delay=0.001 * ((params.seed or 0) % 5))
    taken: list[int] = []

    def lines() -> Iterator[Request]:
        for i in range(40):
            taken.append(i)
            yield Request(id=f"q{i}", prompt=f"p{i}", n=2, params=SamplingParams(seed=i))

    ahead: list[int] = []
    log, _ = open_output(tmp_path / "out.jsonl")
    with log:
        async with Orchestrator(scripted, close_engines=False) as orch:
            with pytest.raises(ConfigError, match="total: give the number of requests"):
                await run_batch(orch, lines(), log)
            stats = await run_batch(
                orch, lines(), log, concurrency=3, total=40, on_result=lambda r, s: ahead.append(len(taken) - s.done)
            )
    assert taken == list(range(40))  # the first call took none
    assert max(ahead) <= 3  # never more requests taken than prompts in progress
    assert (stats.total, stats.done, stats.candidates) == (40, 40, 80)
    assert sorted(str(r["id"]) for r in read_results(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(40))


@pytest.mark.asyncio
async def test_run_batch_from_an_iterator_keeps_what_it_wrote_when_the_engine_dies(
    tmp_path: Path, scripted: ScriptedEngine
) -> None:
    def respond(prompt: Prompt, params: SamplingParams, rid: str) -> Step:
        text = prompt[-1].content if isinstance(prompt, list) else prompt
        if text == "dies":
            return Step(delay=0.05, error=EngineDeadError("gone"))
        return Step(text="ok", delay=0.0 if text == "fast" else 30.0)

    scripted.respond = respond
    requests = iter([Request(id=t, prompt=t, n=1) for t in ("fast", "slow", "dies", "slow2", "never")])
    log, _ = open_output(tmp_path / "out.jsonl")
    with log:
        async with Orchestrator(scripted, close_engines=False) as orch:
            with anyio.fail_after(10), pytest.raises(EngineDeadError, match="gone"):
                await run_batch(orch, requests, log, concurrency=3, total=4)
            assert not scripted.running  # the slow ones were aborted, not awaited
    assert [r["id"] for r in read_results(tmp_path / "out.jsonl")] == ["fast"]
    sent = [c.prompt[-1].content for c in scripted.history]  # type: ignore[index, union-attr]
    assert sent == ["fast", "slow", "dies", "slow2"]  # "slow2" took the slot "fast" freed
    assert [r.id for r in requests] == ["never"]  # not taken


def test_an_input_that_cannot_be_read_twice_is_refused_saying_so(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(OSError), fifo.open("w") as f:  # the reader may be gone already
            f.write(json.dumps({"id": "a", "prompt": "x"}) + "\n")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with pytest.raises(ConfigError, match=r"is not a regular file \(a pipe\?\); it is read twice, .*save it to a file first"):
            check_input(fifo, BASE, max_n=64)
    finally:
        writer.join(timeout=10)
    assert not writer.is_alive()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_real_engine_writes_the_same_results_from_a_file_read_lazily(vllm_engine: object, tmp_path: Path) -> None:
    """The embedded model: a file checked, then parsed again a line at a time as
    the run takes it, sends the requests (prompt, candidates' sampling and seeds) its
    requests held in a list send, and gets a complete Result for each. (Not the same
    texts to the token: the candidates of one request reach vLLM in one engine step or
    in two as timing has it, and a different batch can flip a near-tie token.)"""
    from nbest.batch import plan_check

    lines: list[object] = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(3)]
    inp = write_lines(tmp_path / "in.jsonl", [*lines, "{broken", {"id": "q9", "prompt": "Name a colour.", "n": 3}])
    base = Request(prompt="(per line)", n=2, params=SamplingParams(seed=11, max_tokens=8))
    async with Orchestrator(vllm_engine, close_engines=False) as orch:  # type: ignore[arg-type]
        checked = check_input(inp, base, max_n=64, check=plan_check(orch))
        assert (checked.prompts, checked.bad_lines) == (4, 1)
        for name, requests in (("held", read_input(inp, base, max_n=64).requests), ("lazy", checked.requests())):
            log, _ = open_output(tmp_path / f"{name}.jsonl")
            with log:
                await run_batch(orch, requests, log, concurrency=1, total=checked.prompts)  # one at a time: same batches

    def sent(path: Path) -> dict[str, tuple[object, list[object]]]:
        results = read_results(path)
        for r in results:
            assert all(c["text"] and not c["error"] for c in r["candidates"]), r  # type: ignore[index]
        return {str(r["id"]): (r["prompt"], [c["spec"] for c in r["candidates"]]) for r in results}  # type: ignore[index]

    lazy = sent(tmp_path / "lazy.jsonl")
    assert sorted(lazy) == ["q0", "q1", "q2", "q9"] and len(lazy["q9"][1]) == 3
    assert lazy == sent(tmp_path / "held.jsonl")


# -- the hidden partial errors file of a run killed while it checked its input -------------------


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_a_run_killed_while_checking_its_input_leaves_a_partial_the_next_run_removes(tmp_path: Path) -> None:
    """SIGKILL in the first pass (bad lines being written to the hidden errors
    file) leaves that file; the next run removes it and writes the errors file
    in full."""
    bad = 300_000  # seconds of checking: time to see the partial and kill the run
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"{x\n" * bad + b'{"id": "ok", "prompt": "fine"}\n')
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.cli_with_engine", "same_answer", "batch", str(inp), "-o", str(out), "-n", "1"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _partials(tmp_path):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no partial errors file after 60 s"
            time.sleep(0.005)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    assert _partials(tmp_path) == [f".out.jsonl.errors.jsonl.{proc.pid}.partial"]  # the crash's trace
    assert not (tmp_path / "out.jsonl.errors.jsonl").exists()  # never put in place
    main(["batch", str(inp), "-o", str(out), "-n", "1"], engine_factory=same_answer)
    assert _partials(tmp_path) == []
    with (tmp_path / "out.jsonl.errors.jsonl").open() as f:
        assert sum(1 for _ in f) == bad
    assert [r["id"] for r in read_results(out)] == ["ok"]


def test_only_partials_no_live_run_writes_are_removed(tmp_path: Path) -> None:
    """Stale: no lock held and its process gone (or this one). Kept: a partial
    whose process runs, one locked by a run still writing it, other files'
    partials, names that only look alike, and symbolic links."""
    from nbest.batch.output import open_partial, partial_path, remove_stale_partials

    errors = tmp_path / "out.jsonl.errors.jsonl"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its process id names no process now

    def partial(pid: int | str, name: str = errors.name) -> Path:
        path = tmp_path / f".{name}.{pid}.partial"
        path.write_text("{}\n")
        return path

    stale = [partial(ended.pid), partial(0)]
    kept = [partial(os.getppid()), partial(ended.pid, name="other.jsonl"), partial("x12"), partial(f"{ended.pid}.partial.bak")]
    link = tmp_path / f".{errors.name}.4194305.partial"  # over any pid_max: no such process
    link.symlink_to(kept[1])
    writing = open_partial(partial_path(errors))  # a run of this process still checking its input
    try:
        assert sorted(remove_stale_partials(errors)) == sorted(stale)
        assert remove_stale_partials(errors) == []
        assert partial_path(errors).exists()  # locked while open
    finally:
        writing.close()
    assert remove_stale_partials(errors) == [partial_path(errors)]  # closed, never put in place: stale now
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and link.is_symlink()
