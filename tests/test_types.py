"""Validation of the shared models: bad input is a ConfigError naming the field."""

from __future__ import annotations

import pytest

from nbest import ConfigError, Request, SamplingParams
from nbest.types import CandidateSpec, ChatMessage


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"temperature": -0.1}, "temperature", "greater than or equal to 0"),
        ({"temperature": 0.001}, "temperature", "0 (greedy) or at least 0.01"),
        ({"temperature": float("nan")}, "temperature", "finite"),
        ({"top_p": 0.0}, "top_p", "greater than 0"),
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"top_k": 0}, "top_k", "-1 (off) or at least 1"),
        ({"top_k": -2}, "top_k", "-1 (off) or at least 1"),
        ({"min_p": -0.1}, "min_p", "greater than or equal to 0"),
        ({"min_p": 1.1}, "min_p", "less than or equal to 1"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"stop": [""]}, "stop", "must not be empty"),
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
    ],
)
def test_sampling_params_rejects_bad_values(kwargs: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SamplingParams(top_p=2)


def test_valid_sampling_params_keep_their_values() -> None:
    p = SamplingParams(temperature=0, top_p=0.9, top_k=40, min_p=0.05, seed=3, max_tokens=12, stop="\n")
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed, p.max_tokens, p.stop) == (0, 0.9, 40, 0.05, 3, 12, ["\n"])
    assert p.greedy


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt": ""}, "prompt must not be empty"),
        ({"prompt": "   \n"}, "prompt must not be empty"),
        ({"prompt": []}, "prompt must hold at least one message"),
        ({"prompt": [{"role": "user", "content": " "}]}, "prompt messages are all empty"),
        ({"prompt": "x", "n": 0}, "n: Input should be greater than or equal to 1"),
        ({"prompt": "x", "params": {"top_p": 0}}, "params.top_p: Input should be greater than 0"),
        ({"prompt": [{"role": "user", "content": "x"}], "chat": False}, "chat=False needs a text prompt"),
        ({"prompt": "x", "chat": False, "system": "s"}, "system needs chat=True"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "prompt"),
    ],
)
def test_request_rejects_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        Request.parse(kwargs)


def test_request_parses_json_and_renders_chat() -> None:
    request = Request.parse('{"prompt": "Hi", "n": 2, "system": "Be brief"}')
    assert request.rendered() == [ChatMessage(role="system", content="Be brief"), ChatMessage(role="user", content="Hi")]
    assert Request(prompt="raw text", chat=False).rendered() == "raw text"
    # a prompt variant replaces the prompt, the system prompt stays
    assert request.rendered("Hello")[-1] == ChatMessage(role="user", content="Hello")


def test_existing_system_message_is_not_doubled() -> None:
    request = Request(prompt=[{"role": "system", "content": "A"}, {"role": "user", "content": "q"}], system="B")  # type: ignore[list-item]
    assert [m.content for m in request.rendered()] == ["A", "q"]


def test_bad_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Invalid JSON"):
        Request.parse("{not json")


def test_spec_round_trips_through_json() -> None:
    spec = CandidateSpec(index=2, engine="a", params=SamplingParams(seed=9, top_k=5), strategy="fixed")
    assert CandidateSpec.parse(spec.model_dump_json()) == spec


def test_a_long_bad_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as info:
        SamplingParams(temperature="x" * 10_000)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("temperature:") and "(10002 characters)" in message and len(message) < 300
    assert info.value.value == "x" * 10_000  # the value itself is kept for code that needs it
