"""OpenAIEngine's api_key and extra_body are checked when the engine is built: a
key a header cannot carry, or a body that is not JSON, would otherwise fail every
request (and a bad key would mark every endpoint down)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbest import ConfigError, Orchestrator
from nbest.cli import main
from nbest.engines.config import load_engines
from nbest.engines.openai import EXTRA_BODY_BYTES, OpenAIEngine
from tests.fake_openai import MODEL, FakeFleet

SECRET = "sk-s3cret"


@pytest.mark.parametrize(
    "key",
    [f"{SECRET}\n", f"{SECRET}\r\nX-Evil: 1", f"{SECRET} more", f"{SECRET}\t", f"{SECRET}é", "x" * 8193, 42],
)
def test_keys_a_header_cannot_carry_are_config_errors_that_do_not_repeat_the_key(key: Any) -> None:
    with pytest.raises(ConfigError, match="api_key: must be at most 8192 visible ASCII characters") as info:
        OpenAIEngine(["http://h:1/v1"], model="m", api_key=key)
    assert info.value.parameter == "api_key"
    assert SECRET not in str(info.value) and info.value.value is None


@pytest.mark.asyncio
@pytest.mark.parametrize("key", ["sk-abc_DEF.123~+/=", "x" * 8192, "", None])
async def test_keys_that_fit_a_header_are_sent_as_bearer_tokens(key: str | None) -> None:
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})

    async with OpenAIEngine(["http://h:1/v1"], model="m", api_key=key, transport=httpx.MockTransport(handle)) as engine:
        assert engine.api_key == key
    assert seen == [f"Bearer {key}" if key else None]


@pytest.mark.parametrize(
    ("extra_body", "fragment"),
    [
        ({"n": 4}, "extra_body: n is set by nbest for each candidate .*; extra_body adds other request fields"),
        ({"stream": False, "temperature": 0, "ignore_eos": True}, "extra_body: stream, temperature are set by nbest"),
        ({"x": math.nan}, "extra_body: must be JSON .* ValueError: Out of range float values"),
        ({"x": [1.0, -math.inf]}, "extra_body: must be JSON .* ValueError: Out of range float values"),
        ({"x": {1, 2}}, "extra_body: must be JSON .* TypeError: Object of type set"),
        ({"x": object()}, "extra_body: must be JSON .* TypeError: Object of type object"),
        ({("a", "b"): 1}, "extra_body: must be JSON .* TypeError: keys must be"),
        ({"x": "a" * EXTRA_BODY_BYTES}, f"extra_body: {EXTRA_BODY_BYTES + 8} bytes as JSON; at most {EXTRA_BODY_BYTES}"),
        ({"x": "é" * (EXTRA_BODY_BYTES // 2)}, "bytes as JSON; at most"),
        (["ignore_eos"], "extra_body: must be a mapping of request fields, not list"),
    ],
)
def test_extra_bodies_that_are_not_json_or_too_long_are_config_errors(extra_body: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        OpenAIEngine(["http://h:1/v1"], model="m", extra_body=extra_body)
    assert info.value.parameter == "extra_body"


def test_a_deeply_nested_extra_body_is_a_config_error_in_bounded_work() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ConfigError, match=r"extra_body: must be JSON .* RecursionError"):
        OpenAIEngine(["http://h:1/v1"], model="m", extra_body={"x": deep})


@pytest.mark.asyncio
async def test_a_json_extra_body_reaches_every_request_and_is_a_copy() -> None:
    fleet = FakeFleet("a:1")
    extra = {"ignore_eos": True, "guided_choice": ["yes", "no"], "priority": -1, "note": "é"}
    e = OpenAIEngine(fleet.urls, model=MODEL, transport=fleet.transport, extra_body=extra)
    extra["ignore_eos"] = False  # the engine keeps what it was given
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=2, seed=0, max_tokens=4)
    assert all(c.ok for c in result.candidates)
    bodies = fleet["a:1"].bodies
    assert len(bodies) == 2
    for body in bodies:
        assert {k: body[k] for k in ("ignore_eos", "guided_choice", "priority", "note")} == {
            "ignore_eos": True,
            "guided_choice": ["yes", "no"],
            "priority": -1,
            "note": "é",
        }


def test_an_engines_file_with_a_nan_in_extra_body_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "engines.yaml"
    path.write_text("engines:\n  r: {kind: openai, endpoints: [http://h:1], model: m, extra_body: {top_a: .nan}}\n")
    with pytest.raises(ConfigError, match="engines file") as info:
        load_engines(path)
    assert "extra_body: must be JSON" in str(info.value)


def test_a_bad_key_in_the_environment_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", f"{SECRET}\n")
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", "-n", "2", "--endpoint", "http://127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert out == "" and err.count("\n") == 1 and "api_key: must be at most 8192 visible ASCII characters" in err
    assert SECRET not in err
