"""Engines files (local and remote engines by name) and the run command's
--endpoint/--engines options: bad input is one line on stderr and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbest import ConfigError, OpenAIEngine, VLLMEngine
from nbest.cli import main
from nbest.engines.config import engines_from_options, load_engines

YAML = """\
engines:
  local:
    kind: vllm
    args: {max_model_len: 2048}
  fleet:
    kind: openai
    model: org/model
    endpoints:
      - http://127.0.0.1:8001
      - {url: "http://127.0.0.1:8002/v1", weight: 2, max_concurrency: 5}
    api_key_env: FLEET_KEY
    down_timeout: 3
"""


def test_yaml_file_builds_named_local_and_remote_engines(tmp_path: Path) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text(YAML)
    engines = load_engines(path, {"FLEET_KEY": "sk-test"})
    assert list(engines) == ["local", "fleet"]
    local, fleet = engines["local"], engines["fleet"]
    assert isinstance(local, VLLMEngine) and local.name == "local" and local.engine_args == {"max_model_len": 2048}
    assert not local.started
    assert isinstance(fleet, OpenAIEngine) and fleet.name == "fleet" and fleet.api_key == "sk-test"
    assert [(e.url, e.weight, e.max_concurrency) for e in fleet.endpoints] == [
        ("http://127.0.0.1:8001/v1", 1.0, 64),
        ("http://127.0.0.1:8002/v1", 2.0, 5),
    ]
    assert fleet.fleet.down_timeout == 3


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_json_and_toml_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"engines{suffix}"
    if suffix == ".json":
        path.write_text('{"engines": {"r": {"kind": "openai", "endpoints": ["http://h:1"], "model": "m"}}}')
    else:
        path.write_text('[engines.r]\nkind = "openai"\nendpoints = ["http://h:1"]\nmodel = "m"\n')
    (engine,) = load_engines(path).values()
    assert isinstance(engine, OpenAIEngine) and engine.model == "m"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("engines: {}", "engines: Dictionary should have at least 1 item"),
        ("engines: {r: {kind: tgi}}", "engines.r.kind: unknown engine 'tgi'; known: openai, vllm"),
        ("engines: {r: {kind: openai, endpoints: []}}", "endpoints: List should have at least 1 item"),
        (
            "engines: {r: {kind: openai, endpoints: [localhost:8000]}}",
            "engines.r: endpoint 'localhost:8000': need an http(s) URL",
        ),
        ("engines: {r: {kind: openai, endpoints: [http://h:1], api_key_env: NOPE}}", "engines.r: api_key_env: NOPE is not set"),
        ("engines: {r: {kind: openai, endpoints: [http://h:1], retries: 3}}", "retries: Extra inputs are not permitted"),
        ("engines: {r: {kind: vllm, model: ./no/such/folder}}", "engines.r: model"),
        ("engines: [", "not valid YAML"),
    ],
)
def test_bad_engines_files_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="engines file") as info:
        load_engines(path)
    assert fragment in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_engines(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"use \.yaml"):
        load_engines(tmp_path / "engines.ini")


def test_command_line_options_choose_the_engine(tmp_path: Path) -> None:
    remote = engines_from_options(None, ["http://127.0.0.1:9"], None, {"OPENAI_API_KEY": "k"})["default"]
    assert isinstance(remote, OpenAIEngine) and remote.model is None and remote.api_key == "k"
    assert isinstance(engines_from_options(None, [], None)["default"], VLLMEngine)
    path = tmp_path / "e.yaml"
    path.write_text(YAML)
    with pytest.raises(ConfigError, match="drop --endpoint/--model"):
        engines_from_options("m", [], path)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "hi", "--endpoint", "localhost:8000"], "endpoint 'localhost:8000': need an http(s) URL"),
        (["run", "hi", "--endpoint", "http://h:1", "--endpoint", "http://h:1/v1"], "listed twice"),
        (["run", "hi", "--engines", "no/such/engines.yaml"], "engines file not found: no/such/engines.yaml (No such file"),
        (["run", "hi", "--engines", "e.yaml", "--endpoint", "http://h:1"], "drop --endpoint/--model"),
    ],
)
def test_bad_engine_options_are_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert out == "" and err.count("\n") == 1 and fragment in err


def test_unreachable_endpoint_exits_1_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    # port 9 (discard) on loopback: nothing listens, the connection is refused
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", "-n", "2", "--endpoint", "http://127.0.0.1:9"])
    _, err = capsys.readouterr()
    assert info.value.code == 1
    assert "no endpoint answered: http://127.0.0.1:9/v1 (down: ConnectError" in err
