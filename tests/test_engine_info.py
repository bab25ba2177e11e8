"""``Result.engines``: what each engine that generated a Result's candidates ran with
(``describe_engine``), and ``nbest run -v``, which prints it on stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.cli import main
from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine, describe_engine
from nbest.engines.openai import OpenAIEngine
from nbest.types import CandidateSpec, Request, Result
from tests.scripted import ScriptedEngine

VLLM_LIKE = {
    "kind": "vllm",
    "model": "/models/smollm2",
    "args": {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 4096},
    "compile": "eager: no compile cache yet",
    "env": {"VLLM_CPU_OMP_THREADS_BIND": "0-1"},
    "start_s": 11.5,
}


@dataclass
class DescribedEngine(ScriptedEngine):
    """A scripted engine that says what it runs with, as VLLMEngine does."""

    def describe(self) -> dict[str, Any]:
        return dict(VLLM_LIKE)


class _Plan:
    """Candidates 0 and 1 on route "a", 2 on route "b"."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        return [CandidateSpec(index=i, engine=route, params=request.params) for i, route in enumerate("aab")]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_result_names_the_kind_of_engine_of_its_route() -> None:
    async with Orchestrator(ScriptedEngine()) as orch:
        result = await orch.generate("hi", n=2, seed=1)
    assert result.engines == {"default": {"kind": "ScriptedEngine"}}  # no describe(): its class name


@pytest.mark.asyncio(loop_scope="session")
async def test_a_result_describes_each_route_its_candidates_used() -> None:
    engines: dict[str, Engine] = {"a": DescribedEngine(), "b": ScriptedEngine(), "unused": ScriptedEngine()}
    async with Orchestrator(engines, strategy=_Plan()) as orch:
        result = await orch.generate("hi", n=3, seed=1)
    assert result.engines == {"a": VLLM_LIKE, "b": {"kind": "ScriptedEngine"}}
    assert Result.model_validate_json(result.model_dump_json()) == result  # JSON both ways


def test_a_result_json_from_before_engines_still_loads() -> None:
    old = Result(id="r", prompt="q", n=0, candidates=[], best=None).model_dump(mode="json")
    del old["engines"]
    assert Result.model_validate(old).engines == {}


def test_describe_engine_falls_back_to_the_class_name() -> None:
    assert describe_engine(ScriptedEngine()) == {"kind": "ScriptedEngine"}
    assert describe_engine(DescribedEngine()) == VLLM_LIKE


def test_a_vllm_engine_describes_no_arguments_before_it_starts() -> None:
    info = VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct", dtype="bfloat16").describe()
    assert info == {
        "kind": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct", "args": {}, "compile": None, "env": {}, "start_s": None
    }  # fmt: skip


def test_a_vllm_engine_argument_json_cannot_hold_is_described_by_its_repr() -> None:
    class Config:
        def __repr__(self) -> str:
            return "Config(level=3)"

    engine = VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct")
    engine.started_args = {"compilation_config": Config(), "dtype": "bfloat16", "max_model_len": 4096}
    info = engine.describe()
    assert info["args"] == {"compilation_config": "Config(level=3)", "dtype": "bfloat16", "max_model_len": 4096}
    result = Result(id="r", prompt="q", n=0, candidates=[], best=None, engines={"default": info})
    assert json.loads(result.model_dump_json())["engines"]["default"]["args"]["compilation_config"] == "Config(level=3)"


def test_an_openai_engine_describes_no_secret() -> None:
    engine = OpenAIEngine(
        ["https://user:pw-in-url@10.0.0.1:8000/v1", "http://10.0.0.2:8000"],
        model="Qwen/Qwen2.5-7B-Instruct",
        api_key="sk-very-secret",
        extra_body={"secret_field": "extra-secret"},
    )
    info = describe_engine(engine)
    assert info == {
        "kind": "openai",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "endpoints": ["https://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"],
        "chat": True,
        "stream": True,
    }
    text = json.dumps(info)
    for secret in ("sk-very-secret", "pw-in-url", "user", "extra-secret", "secret_field", "Authorization"):
        assert secret not in text


def _factory(options: EngineOptions) -> dict[str, Engine]:
    return {"default": DescribedEngine()}


def test_run_verbose_prints_each_engine_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "hi", "-n", "2", "--seed", "1", "-v"], engine_factory=_factory)
    out, err = capsys.readouterr()
    assert "answer 1" in out and "engine default" not in out  # stdout stays the result
    assert err.splitlines()[-1] == (
        "engine default: vllm /models/smollm2 (dtype=bfloat16, enforce_eager=True, max_model_len=4096, "
        "VLLM_CPU_OMP_THREADS_BIND=0-1) started in 11.5 s; eager: no compile cache yet"
    )


def test_run_verbose_keeps_the_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "hi", "-n", "2", "--seed", "1", "--verbose", "--json"], engine_factory=_factory)
    out, err = capsys.readouterr()
    assert json.loads(out)["engines"] == {"default": VLLM_LIKE}
    assert "engine default: vllm /models/smollm2" in err


def test_run_without_verbose_prints_no_engine_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "hi", "-n", "2", "--seed", "1"], engine_factory=_factory)
    assert "engine default" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_real_engine_records_the_arguments_it_ran_with(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        result = await orch.generate("Say hello.", n=2, seed=0, max_tokens=8)
    info = result.engines["default"]
    assert info["kind"] == "vllm" and info["model"] == vllm_engine.model
    assert info["args"]["dtype"] in ("bfloat16", "float32")
    assert info["args"]["enable_chunked_prefill"] is False
    assert info["start_s"] is not None and info["start_s"] > 0
    assert info["args"] == vllm_engine.started_args
    assert info["env"] == vllm_engine.started_env and "VLLM_CPU_KVCACHE_SPACE" in info["env"]
