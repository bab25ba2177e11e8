"""Engines by kind (``nbest.engines.ENGINES``): short forms, engines files, a
third-party kind through the ``nbest.engines`` entry-point group, the CLI's
injectable engine factory, and ``Startable``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner

import nbest.engines.config as engines_config
from nbest import ConfigError, OpenAIEngine, Orchestrator, VLLMEngine
from nbest.cli import cli, main, make_cli
from nbest.cli.options import EngineOptions
from nbest.engines import (
    ENGINES,
    Engine,
    EngineConfig,
    EnginesFile,
    OpenAIEngineConfig,
    Startable,
    VLLMEngineConfig,
    load_engines,
)
from nbest.registry import Registry
from tests.batch_engines import seed_answers
from tests.plugin_engine import EchoEngine, EchoEngineConfig
from tests.scripted import ScriptedEngine

ROOT = Path(__file__).resolve().parent.parent


def test_built_in_kinds_and_their_short_forms() -> None:
    assert sorted(ENGINES.kinds()) == ["openai", "vllm"]
    assert ENGINES.short_forms() == "openai:URL[,URL...], vllm[:MODEL]"
    assert ENGINES.build("vllm") == VLLMEngineConfig(model=None)
    assert ENGINES.build("vllm:org/model") == VLLMEngineConfig(model="org/model")
    remote = ENGINES.build("openai:http://a:1, http://b:2/v1")
    assert isinstance(remote, OpenAIEngineConfig) and remote.endpoints == ["http://a:1", "http://b:2/v1"]
    assert ENGINES.build('{"kind": "openai", "endpoints": ["http://a:1"], "model": "m"}').model == "m"  # type: ignore[attr-defined]
    engine = remote.build("fleet", {})
    assert isinstance(engine, OpenAIEngine) and engine.name == "fleet"
    assert [e.url for e in engine.endpoints] == ["http://a:1/v1", "http://b:2/v1"]
    assert remote.build("", {}).name == "openai"  # no name: the engine names itself


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("openai", "openai: give the server URLs, openai:URL[,URL...]"),
        ("tgi:http://h:1", "unknown engine 'tgi'; use openai:URL[,URL...], vllm[:MODEL]"),
        ({"kind": "vllm", "modle": "m"}, "modle: Extra inputs are not permitted"),
        ({"kind": "openai", "endpoints": ["http://h:1"], "max_attempts": 0}, "max_attempts: Input should be greater than"),
    ],
)
def test_bad_engine_specs_are_config_errors(spec: str | dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ENGINES.build(spec)
    assert fragment in str(info.value)


def test_engines_file_entries_may_be_short_forms(tmp_path: Path) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text('engines:\n  small: vllm\n  fleet: "openai:http://127.0.0.1:8001,http://127.0.0.1:8002/v1"\n')
    engines = load_engines(path)
    small, fleet = engines["small"], engines["fleet"]
    assert isinstance(small, VLLMEngine) and small.name == "small" and not small.started
    assert isinstance(fleet, OpenAIEngine) and fleet.name == "fleet"
    assert [e.url for e in fleet.endpoints] == ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
    with pytest.raises(
        ConfigError, match=r"engines\.small: '@other.yaml': give a config mapping or a short form here, not @FILE"
    ):
        EnginesFile.parse({"engines": {"small": "@other.yaml"}})


def test_engines_file_dumps_every_field_of_each_kind() -> None:
    data = {"engines": {"r": {"kind": "openai", "endpoints": ["http://h:1"], "down_timeout": 3}, "l": "vllm"}}
    dumped = EnginesFile.parse(data).model_dump()
    assert dumped["engines"]["r"]["down_timeout"] == 3 and dumped["engines"]["r"]["endpoints"] == ["http://h:1"]
    assert dumped["engines"]["l"] == {"kind": "vllm", "model": None, "args": {}}
    assert EnginesFile.parse(dumped) == EnginesFile.parse(data)


class _NotAnEngineConfig(EngineConfig):
    kind: Literal["broken"] = "broken"

    def build(self, name: str, environ: Mapping[str, str]) -> Engine:
        return object()  # type: ignore[return-value]


def test_a_registered_kind_works_in_an_engines_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry[EngineConfig] = Registry("engine", "nbest.engines", EngineConfig)
    for kind, cls in ENGINES.kinds().items():
        registry.add(kind, cls)
    registry.add("echo", EchoEngineConfig)
    registry.add("broken", _NotAnEngineConfig)
    monkeypatch.setattr(engines_config, "ENGINES", registry)
    path = tmp_path / "engines.yaml"
    path.write_text("engines:\n  talk: {kind: echo, text: hello}\n  quiet: 'echo:bye'\n")
    engines = load_engines(path)
    assert [(e.name, e.text) for e in engines.values() if isinstance(e, EchoEngine)] == [("talk", "hello"), ("quiet", "bye")]
    path.write_text("engines:\n  talk: {kind: echo, txt: hello}\n")
    with pytest.raises(ConfigError, match=r"engines\.talk\.txt: Extra inputs are not permitted"):
        load_engines(path)
    path.write_text("engines:\n  odd: broken\n")
    with pytest.raises(ConfigError, match=r"engines\.odd: kind 'broken' built a object, not an Engine"):
        load_engines(path)


def _plugin_distribution(tmp_path: Path) -> Path:
    """A folder holding an installed distribution that publishes the ``echo`` engine kind."""
    site = tmp_path / "site"
    info = site / "nbest_echo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nbest-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nbest.engines]\necho = tests.plugin_engine:EchoEngineConfig\n")
    return site


def test_a_plugin_engine_from_an_entry_point_serves_nbest_run(tmp_path: Path) -> None:
    engines = tmp_path / "engines.yaml"
    engines.write_text("engines:\n  talk: {kind: echo, text: hello}\n  quiet: 'echo:bye'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_plugin_distribution(tmp_path)), str(ROOT)])}
    argv = [sys.executable, "-m", "nbest.cli", "run", "hi", "-n", "2", "--seed", "5", "--engines", str(engines), "--json"]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(c["text"] for c in result["candidates"]) == ["hello 5", "hello 6"]  # the first engine is the default route
    # without the distribution the kind is unknown: one line, exit 2
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "engines.talk.kind: unknown engine 'echo'; known: openai, vllm" in proc.stderr


def test_main_takes_an_engine_factory_with_the_engine_options(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[EngineOptions] = []

    def factory(options: EngineOptions) -> dict[str, Engine]:
        seen.append(options)
        return seed_answers(options)

    argv = ["run", "hi", "-n", "2", "--seed", "3", "--json", "--model", "m", "--endpoint", "localhost:1"]
    with pytest.raises(SystemExit) as info:
        main(argv, engine_factory=factory)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert seen == [EngineOptions(model="m", endpoints=("localhost:1",), engines_file=None)]  # the factory decides
    assert sorted(c["text"] for c in json.loads(out)["candidates"]) == ["The answer is 0.", "The answer is 1."]


def test_make_cli_hands_the_factory_to_every_command_through_the_context(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a", "prompt": "x"}\n')
    result = CliRunner().invoke(make_cli(seed_answers), ["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "answer is" in (tmp_path / "out.jsonl").read_text()
    assert cli.context_settings["obj"].engine_factory is None  # the console script loads what the options say


def test_an_engine_factory_must_return_engines() -> None:
    with pytest.raises(TypeError, match="the engine factory must return engines by route"):
        main(["run", "hi"], engine_factory=lambda options: {})


def test_the_environment_names_no_engine(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NBEST_ENGINE_FACTORY", "tests.batch_engines:seed_answers")
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", "--endpoint", "localhost:8000"])
    assert info.value.code == 2
    assert "endpoint 'localhost:8000': need an http(s) URL" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_orchestrator_starts_startable_engines_once() -> None:
    echo, scripted = EchoEngine("e", "hi"), ScriptedEngine()
    assert isinstance(echo, Startable) and isinstance(echo, Engine)
    assert not isinstance(scripted, Startable)
    async with Orchestrator({"a": echo, "b": echo, "c": scripted}) as orch:
        result = await orch.generate("x", n=2, seed=1)
    assert echo.starts == 1 and echo.closed
    assert sorted(c.text for c in result.candidates) == ["hi 1", "hi 2"]


def test_every_openai_engine_option_is_an_engines_file_field() -> None:
    """A keyword added to OpenAIEngine reaches engines files (and the short form's config) too."""
    import inspect

    from nbest.engines import OpenAIEngine
    from nbest.engines.config import OpenAIEngineConfig

    keywords = set(inspect.signature(OpenAIEngine.__init__).parameters) - {"self", "endpoints", "model", "name", "transport"}
    fields = set(OpenAIEngineConfig.model_fields) - {"kind", "endpoints", "model", "api_key_env"}
    assert keywords == fields
    engine = OpenAIEngineConfig(endpoints=["http://h:1"], read_timeout=5, max_strikes=2, stream=False).build("r", {})
    assert isinstance(engine, OpenAIEngine)
