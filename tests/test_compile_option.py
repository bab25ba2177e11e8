"""``--compile``: the in-process engine compiles its model (vLLM ``enforce_eager=False``);
a remote engine or an engines file refuses it with one line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nbest.cli import cli, main
from nbest.cli.options import EngineOptions
from nbest.engines import config
from nbest.engines.base import Engine
from nbest.engines.config import engines_from_options
from nbest.engines.vllm import VLLMEngine
from nbest.errors import ConfigError
from tests.scripted import ScriptedEngine


@pytest.mark.parametrize("flag", [[], ["--compile"]])
def test_the_engine_factory_is_told_whether_to_compile(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[EngineOptions] = []

    def factory(options: EngineOptions) -> dict[str, Engine]:
        seen.append(options)
        return {"default": ScriptedEngine()}  # type: ignore[dict-item]

    main(["run", "hi", "-n", "2", "--seed", "1", *flag], engine_factory=factory)
    assert [o.compile for o in seen] == [bool(flag)]
    assert "answer 1" in capsys.readouterr().out


def test_compile_passes_enforce_eager_false_to_the_vllm_engine() -> None:
    engine = engines_from_options(None, (), None, {}, engine_args={"enforce_eager": False})["default"]
    assert isinstance(engine, VLLMEngine) and not engine.started
    assert engine.engine_args["enforce_eager"] is False
    plain = engines_from_options(None, (), None, {})["default"]
    assert isinstance(plain, VLLMEngine) and "enforce_eager" not in plain.engine_args


def test_compile_with_a_remote_engine_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        engines_from_options(None, ("http://h:8000",), None, {}, engine_args={"enforce_eager": False})
    assert info.value.parameter == "compile"


def test_compile_with_an_endpoint_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", "--compile", "--endpoint", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == (
        "nbest: error: --compile/--eager: only for the in-process engine (--model); in an engines file set args: "
        "{enforce_eager: false} (compiled), true (eager) or auto\n"
    )


class _Built(Exception):
    """Raised by the engine builder below once it saw what it was asked for."""


@pytest.mark.parametrize(
    ("command", "flags", "engine_args"),
    [
        ("run", [], None),  # a one-off run starts fastest eager
        ("run", ["--compile"], {"enforce_eager": False}),
        ("run", ["--eager"], {"enforce_eager": True}),
        ("batch", [], {"enforce_eager": "auto"}),  # long-running: compiled once the cache is warm
        ("batch", ["--eager"], {"enforce_eager": True}),
        ("eval", [], {"enforce_eager": "auto"}),
        ("eval", ["--compile"], {"enforce_eager": False}),
        ("serve", [], {"enforce_eager": "auto"}),
        ("serve", ["--endpoint", "http://127.0.0.1:9/v1"], None),  # "auto" is the in-process engine's only
    ],
)
def test_each_command_asks_for_compiled_eager_or_auto(
    command: str, flags: list[str], engine_args: dict[str, object] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []

    def engines_from_options(*args: object, engine_args: object = None) -> dict[str, Engine]:
        seen.append(engine_args)
        raise _Built

    monkeypatch.setattr(config, "engines_from_options", engines_from_options)
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "hi", "answer": "1"}\n')
    argv = {
        "run": ["run", "hi"],
        "batch": ["batch", str(data), "-o", str(tmp_path / "out.jsonl")],
        "eval": ["eval", str(data), "--answer-field", "answer"],
    }
    result = CliRunner().invoke(cli, [*argv.get(command, [command]), *flags])
    assert isinstance(result.exception, _Built), result.output
    assert seen == [engine_args]
