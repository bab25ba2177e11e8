"""Every surface offers exactly the fields of ``SamplingParams``.

The sampling options of ``nbest run``, ``batch``, ``eval`` and ``plan``, the
per-line overrides of a batch file and the sampling fields of the OpenAI
routes are all derived from :class:`~nbest.types.SamplingParams`. These tests
fail when a surface misses a field (a new field that no surface offers), and
when a surface offers a sampling setting that is not a field (a hand-copied
option that drifted). The command line leaves out the fields of
:data:`~nbest.cli.options.CLI_EXCLUDED`; the data surfaces (batch lines, HTTP
bodies) take every field.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from nbest import Orchestrator
from nbest.batch.inputs import BatchLine
from nbest.cli.batch import batch_command
from nbest.cli.eval import eval_command
from nbest.cli.options import CLI_EXCLUDED
from nbest.cli.plan import plan_command
from nbest.cli.run import run_command
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.server.openai_api import OPENAI_SAMPLING, ChatBody, CompletionBody
from nbest.types import Request, SamplingParams
from tests.scripted import ScriptedEngine

FIELDS = set(SamplingParams.model_fields)
CLI_FIELDS = FIELDS - set(CLI_EXCLUDED)

EXAMPLE: dict[str, Any] = {
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 5,
    "min_p": 0.1,
    "seed": 3,
    "max_tokens": 7,
    "stop": ["END", "\n\n"],
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "repetition_penalty": 1.1,
    "ignore_eos": True,
    "top_logprobs": 2,
}
"""A valid value, not the default, for every field."""

COMMANDS = {"run": run_command, "batch": batch_command, "eval": eval_command, "plan": plan_command}

TAKEN_BY_NAME = {"plan": {"seed"}}
"""Sampling options a command takes as a named parameter (plan draws a seed when none is given);
every other sampling option reaches the command in ``**sampling``, for ``build_request``."""

BATCH_LINE_OWN = {"id", "prompt", "messages", "n", "system", "metadata"}
"""The fields of a batch line that are not sampling settings."""

OPENAI_OWN = {
    "chat": {"model", "n", "stream", "stream_options", "user", "nbest", "messages", "logprobs"},
    "completion": {"model", "n", "stream", "stream_options", "user", "nbest", "prompt", "echo"},
}
"""The fields of the OpenAI bodies that are not sampling settings (chat's ``logprobs`` is a bool switch)."""


def test_every_field_has_an_example_value() -> None:
    assert set(EXAMPLE) == FIELDS, "give the new SamplingParams field an example value here"
    SamplingParams(**EXAMPLE)
    assert all(
        EXAMPLE[name] != field.get_default(call_default_factory=True) for name, field in SamplingParams.model_fields.items()
    )


def test_the_command_line_leaves_out_only_documented_fields() -> None:
    assert set(CLI_EXCLUDED) <= FIELDS
    assert all(reason.strip() for reason in CLI_EXCLUDED.values())


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_an_option_per_field_and_no_other_sampling_option(name: str) -> None:
    command = COMMANDS[name]
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    named = set(inspect.signature(command.callback).parameters) - {"sampling"}  # type: ignore[arg-type]
    sampling = {n for n in options if n not in named}  # what lands in **sampling
    assert sampling == CLI_FIELDS - TAKEN_BY_NAME.get(name, set())
    assert named & FIELDS == TAKEN_BY_NAME.get(name, set())
    for field in CLI_FIELDS:
        option = options[field]
        assert f"--{field.replace('_', '-')}" in option.opts
        assert option.multiple == (field == "stop")
        if field not in ("seed", "stop"):  # those two have their own help
            description = SamplingParams.model_fields[field].description
            assert description and description in (option.help or "")
    assert "-t" in options["temperature"].opts
    assert "candidate i gets seed + i" in (options["seed"].help or "")
    assert "--until" in (options["stop"].help or "")


def test_a_bool_field_would_be_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbest.cli import options

    monkeypatch.setattr(options, "CLI_EXCLUDED", {})

    @click.command()
    @options.sampling_param_options()
    def show(**sampling: Any) -> None:
        click.echo(repr(sampling["ignore_eos"]))

    runner = CliRunner()
    assert [runner.invoke(show, args).output.strip() for args in ([], ["--ignore-eos"], ["--no-ignore-eos"])] == [
        "None",
        "True",
        "False",
    ]
    with pytest.raises(TypeError, match="no option for"):
        options.sampling_param_options(colour="red")


def test_every_option_reaches_the_plan() -> None:
    argv = ["Why?", "-n", "2", "--json"]
    for field in sorted(CLI_FIELDS):
        flag = f"--{field.replace('_', '-')}"
        values = EXAMPLE[field] if isinstance(EXAMPLE[field], list) else [EXAMPLE[field]]
        for value in values:
            argv += [flag] if value is True else [flag, str(value)]
    result = CliRunner().invoke(plan_command, argv)
    assert result.exception is None, result.output
    params = json.loads(result.output)["specs"][0]["params"]
    assert {field: params[field] for field in CLI_FIELDS} == {field: EXAMPLE[field] for field in CLI_FIELDS}


def test_a_batch_line_overrides_every_field_and_nothing_else() -> None:
    assert set(BatchLine.model_fields) - FIELDS == BATCH_LINE_OWN
    assert set(BatchLine.model_fields) >= FIELDS
    base = Request(prompt="(per line)", n=2, params=SamplingParams(temperature=0.8, seed=1))
    request = BatchLine.parse({"id": "a", "prompt": "p", **EXAMPLE}).request(base)
    assert request.params == SamplingParams(**EXAMPLE)
    untouched = BatchLine.parse({"id": "b", "prompt": "p", "top_k": 9}).request(base)
    assert untouched.params == SamplingParams(temperature=0.8, seed=1, top_k=9)


@pytest.mark.parametrize(("route", "body"), [("chat", ChatBody), ("completion", CompletionBody)])
def test_the_openai_bodies_reach_every_field_and_nothing_else(route: str, body: type[ChatBody | CompletionBody]) -> None:
    table = body.SAMPLING
    assert set(table.values()) == FIELDS  # every field reachable
    assert set(table) <= set(body.model_fields)  # through a field of the body
    assert set(body.model_fields) - set(table) == OPENAI_OWN[route]  # nothing else
    assert OPENAI_SAMPLING["common"].items() <= table.items() and OPENAI_SAMPLING[route].items() <= table.items()
    given = {name: EXAMPLE[field] for name, field in table.items()}
    prompt: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}]} if route == "chat" else {"prompt": "x"}
    assert body.parse({**prompt, **given}).request().params == SamplingParams(**EXAMPLE)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"top_k": 0}, "top_k", "must be -1 (off) or at least 1"),
        ({"min_p": 2}, "min_p", "less than or equal to 1"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "greater than or equal to 1"),
        ({"max_tokens": 0, "max_completion_tokens": 5}, "max_tokens", "greater than or equal to 1"),
        ({"top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        ({"repetition_penalty": 0}, "repetition_penalty", "greater than 0"),
    ],
)
def test_openai_sampling_errors_name_the_body_field(body: dict[str, Any], param: str, words: str) -> None:
    from nbest.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        ChatBody.parse({"messages": [{"role": "user", "content": "x"}], **body}).request()
    assert info.value.parameter == param and str(info.value).startswith(f"{param}: ") and words in str(info.value)


@pytest.mark.asyncio(loop_scope="session")
async def test_vllm_extras_reach_the_engine_over_http(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(), prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            body = {"messages": [{"role": "user", "content": "hi"}], "n": 2, "top_k": 20, "min_p": 0.05,
                    "repetition_penalty": 1.2, "max_completion_tokens": 9, "max_tokens": 30}  # fmt: skip
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            params = scripted.history[-1].params
            assert (params.top_k, params.min_p, params.repetition_penalty, params.max_tokens) == (20, 0.05, 1.2, 9)
            r = await client.post("/v1/completions", json={"prompt": "x", "top_k": 0})
            assert r.status_code == 422 and r.json()["error"]["param"] == "top_k"
