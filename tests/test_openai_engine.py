"""OpenAIEngine on a fake OpenAI-compatible server: request bodies, responses,
model checks, errors, abort and cancellation."""

from __future__ import annotations

import anyio
import httpx
import pytest

from nbest import ConfigError, EngineError, GenerationError, Orchestrator, rerankers
from nbest.engines.fleet import normalise_url
from nbest.engines.openai import OpenAIEngine
from nbest.types import ChatMessage, SamplingParams
from tests.fake_openai import MODEL, FakeFleet, until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def engine(fleet: FakeFleet, **kwargs: object) -> OpenAIEngine:
    kwargs.setdefault("model", MODEL)
    return OpenAIEngine(fleet.urls, transport=fleet.transport, backoff=0.02, max_backoff=0.1, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("https://h.example/v1/", "https://h.example/v1"),
        ("http://h:9/openai/v1", "http://h:9/openai/v1"),
    ],
)
def test_urls_are_normalised(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h/v1", "http://:80/v1", "http://h:notaport/v1", ""])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        OpenAIEngine([url], model="m")


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": ["http://a/v1", "http://a/v1/"]}, "endpoints"),
        ({"endpoints": [{"url": "http://a/v1", "weight": 0}]}, "weight"),
        ({"endpoints": [{"url": "http://a/v1", "max_concurrency": 0}]}, "max_concurrency"),
        ({"endpoints": [{"url": "http://a/v1", "max_concurrency": 2.5}]}, "max_concurrency"),
        ({"endpoints": [{"url": "http://a/v1", "weight": "2"}]}, "weight"),
        ({"endpoints": [{"url": "http://a/v1", "weight": float("inf")}]}, "weight"),
        ({"endpoints": ["http://a/v1"], "request_timeout": 0}, "request_timeout"),
        ({"endpoints": ["http://a/v1"], "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIEngine(model="m", **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_completion_body_sends_only_what_is_set() -> None:
    e = OpenAIEngine(["http://a/v1"], model="m")
    path, body = e.body("Once upon", SamplingParams(temperature=0.7, seed=5, max_tokens=9, stop=["\n"]))
    assert path == "/completions"
    assert body == {
        "model": "m",
        "n": 1,
        "prompt": "Once upon",
        "max_tokens": 9,
        "temperature": 0.7,
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": 5,
        "stop": ["\n"],
        "logprobs": 0,
        "stream": True,  # a silent endpoint is told from a long generation by its read timeout
        "stream_options": {"include_usage": True},
    }


def test_chat_body_carries_vllm_sampling_fields_and_top_logprobs() -> None:
    e = OpenAIEngine(["http://a/v1"], model="m", extra_body={"ignore_eos": True})
    params = SamplingParams(top_k=40, min_p=0.05, repetition_penalty=1.1, top_logprobs=3)
    path, body = e.body([ChatMessage(role="user", content="Hi")], params)
    assert path == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (40, 0.05, 1.1)
    assert (body["logprobs"], body["top_logprobs"], body["ignore_eos"]) == (True, 3, True)
    assert "seed" not in body and "stop" not in body


def test_chat_prompt_on_completion_only_engine_fails_the_candidate() -> None:
    e = OpenAIEngine(["http://a/v1"], model="m", chat=False)
    with pytest.raises(GenerationError, match="chat=False"):
        e.body([ChatMessage(role="user", content="Hi")], SamplingParams())


async def test_chat_response_fills_logprobs_and_usage() -> None:
    fleet = FakeFleet("a:1")
    async with engine(fleet) as e:
        updates = [
            u async for u in e.generate([ChatMessage(role="user", content="Hi")], SamplingParams(seed=3, top_logprobs=1), "r1")
        ]
    (u,) = updates
    assert u.finished and u.text == "a:1 seed=3" and u.finish_reason == "stop"
    assert (u.num_tokens, u.prompt_tokens) == (2, 7)
    assert u.token_logprobs == [-0.5, -0.5] and u.cumulative_logprob == -1.0
    # the sampled token joins the alternatives, as with the in-process engine
    assert u.top_logprobs == [{"alt": -3.0, "a:1": -0.5}, {"alt": -3.0, "seed=3": -0.5}]


async def test_completion_response_without_top_logprobs() -> None:
    fleet = FakeFleet("a:1")
    async with engine(fleet) as e:
        (u,) = [u async for u in e.generate("Once", SamplingParams(seed=4), "r1")]
    assert u.text == "a:1 seed=4" and u.finish_reason == "length"
    assert u.token_logprobs == [-0.5, -0.5] and u.top_logprobs is None
    assert fleet["a:1"].bodies[0]["prompt"] == "Once"


async def test_logprob_rerankers_work_through_the_orchestrator() -> None:
    fleet = FakeFleet("a:1", "b:1")
    async with Orchestrator(engine(fleet), rerankers=[rerankers.MeanLogProb()]) as orch:
        result = await orch.generate("Q?", n=4, seed=10)
    assert sorted(c.spec.params.seed for c in result.candidates) == [10, 11, 12, 13]  # type: ignore[type-var]
    assert all(c.mean_logprob == -0.5 and c.ok for c in result.candidates)
    assert result.usage.prompt_tokens == 4 * 7


async def test_model_the_server_does_not_serve_is_a_config_error_listing_what_it_serves() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].models = ["org/one", "org/two"]
    e = engine(fleet, model="org/three")
    with pytest.raises(ConfigError, match=r"does not serve 'org/three'; it serves 'org/one', 'org/two'"):
        await e.start()
    assert not e.started


async def test_no_model_takes_the_one_the_servers_serve() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].models = fleet["b:1"].models = ["org/only"]
    e = OpenAIEngine(fleet.urls, transport=fleet.transport)
    async with e:
        assert (e.model, e.name) == ("org/only", "only")
    fleet["b:1"].models = ["org/other"]
    with pytest.raises(ConfigError, match="serve"):
        await OpenAIEngine(fleet.urls, transport=fleet.transport).start()


async def test_no_endpoint_answering_at_start_is_an_engine_error_naming_them() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].down = fleet["b:1"].down = True
    with pytest.raises(EngineError, match=r"http://a:1/v1 \(down: ConnectError: connection refused\).*http://b:1/v1"):
        await engine(fleet).start()


@pytest.mark.parametrize("hosts", [["a:1"], ["a:1", "b:1"]], ids=["one", "two"])
async def test_client_error_fails_only_that_candidate_confirmed_once(hosts: list[str]) -> None:
    fleet = FakeFleet(*hosts)
    for server in fleet.servers.values():
        server.status = 400
    async with Orchestrator(engine(fleet)) as orch:
        result = await orch.generate("Q?", n=2, seed=1)
    assert [c.finish_reason for c in result.candidates] == ["error", "error"]
    assert all("HTTP 400" in (c.error or "") and "says 400" in (c.error or "") for c in result.candidates)
    # one endpoint: no retry; two: the second confirms that the request is at fault, nothing more
    assert sum(len(s.bodies) for s in fleet.servers.values()) == 2 * len(hosts)
    assert all(ep.healthy and ep.strikes == 0 for ep in orch.engines["default"].endpoints)  # type: ignore[attr-defined]


async def test_abort_closes_the_request_and_fails_the_candidate() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].delay = 30
    async with engine(fleet) as e:
        failure: list[BaseException] = []

        async def run() -> None:
            try:
                async for _ in e.generate("Q", SamplingParams(), "r-abort"):
                    pass
            except GenerationError as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await until(lambda: fleet["a:1"].in_flight > 0)
            await e.abort("r-abort")
            await e.abort("unknown-id")  # a no-op
    assert fleet["a:1"].cancelled == 1
    assert "aborted" in str(failure[0])


async def test_orchestrator_timeout_cancels_the_http_requests() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].delay = 30
    async with Orchestrator(engine(fleet)) as orch:
        result = await orch.generate("Q?", n=3, timeout=0.3)
    assert [c.finish_reason for c in result.candidates] == ["timeout"] * 3
    assert fleet["a:1"].cancelled == 3 and fleet["a:1"].in_flight == 0


async def test_streamed_answers_are_merged_like_one_response() -> None:
    fleet = FakeFleet("a:1")
    async with engine(fleet) as e:
        chat = [ChatMessage(role="user", content="Hi")]
        (streamed,) = [u async for u in e.generate(chat, SamplingParams(seed=3, top_logprobs=1), "r1")]
        fleet["a:1"].json_only = True
        (whole,) = [u async for u in e.generate(chat, SamplingParams(seed=3, top_logprobs=1), "r2")]
    assert fleet["a:1"].bodies[0]["stream"] is True
    assert streamed == whole


async def test_stream_false_asks_for_answers_in_one_piece() -> None:
    fleet = FakeFleet("a:1")
    async with engine(fleet, stream=False) as e:
        (u,) = [u async for u in e.generate("Once", SamplingParams(seed=4), "r1")]
    assert u.text == "a:1 seed=4" and u.token_logprobs == [-0.5, -0.5]
    assert "stream" not in fleet["a:1"].bodies[0] and "stream_options" not in fleet["a:1"].bodies[0]


@pytest.mark.parametrize(
    ("raw", "content_type", "error"),
    [
        (b"<html>Welcome to nginx!</html>", "text/html", "not an OpenAI response"),
        (b'{"choices": []}', "application/json", "no choices"),
        (b'{"choices": [1]}', "application/json", "a choice is not an object"),
        (b"[1, 2]", "application/json", "no choices"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "not an OpenAI response"),
        (b'data: {"choices": [], "usage": {}}\n\ndata: [DONE]\n\n', "text/event-stream", "no choices"),
        (b'data: {"choices": [{"index": 0, "text": "cut"}]}\n\n', "text/event-stream", "ended before its last choice"),
        (b'data: {"error": {"message": "engine died"}}\n\n', "text/event-stream", "error event: engine died"),
        (b"data: not json\n\n", "text/event-stream", "not an OpenAI response"),
    ],
)
def test_answers_that_are_not_openai_responses_are_endpoint_failures(raw: bytes, content_type: str, error: str) -> None:
    from nbest.engines._openai_read import _parse
    from nbest.engines.openai import EndpointFailure

    with pytest.raises(EndpointFailure, match=error):
        _parse(raw, content_type)


async def test_answer_longer_than_its_bound_is_an_endpoint_failure() -> None:
    fleet = FakeFleet("a:1", "b:1")
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions"):
            fleet["a:1"].bodies.append({})
            return httpx.Response(200, content=b"x" * 3_000_000)
        return await original(request)

    fleet.transport.handler = handle
    e = engine(fleet)
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=4, seed=0, max_tokens=8)
    assert all(c.ok for c in result.candidates) and fleet["b:1"].served
    assert "answer longer than" in (e.endpoints[0].last_error or "")


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"read_timeout": 0}, "read_timeout"),
        ({"read_timeout": "5"}, "read_timeout"),
        ({"request_timeout": True}, "request_timeout"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_strikes": 0}, "max_strikes"),
        ({"max_strikes": "3"}, "max_strikes"),
        ({"backoff": "1"}, "backoff"),
        ({"max_backoff": float("inf")}, "backoff"),
        ({"backoff": 0}, "backoff"),
        ({"down_timeout": float("nan")}, "down_timeout"),
    ],
)
def test_bad_fault_settings_are_config_errors(kwargs: dict[str, object], parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAIEngine(["http://a/v1"], model="m", **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


async def test_closed_engine_refuses_to_start() -> None:
    fleet = FakeFleet("a:1")
    e = engine(fleet)
    await e.start()
    await e.aclose()
    await e.aclose()
    with pytest.raises(EngineError, match="closed"):
        await e.start()


@pytest.mark.parametrize(("stream", "tokens"), [(True, False), (False, False), (True, True)])
async def test_malformed_logprobs_in_a_whole_answer_move_the_candidate_and_strike_the_endpoint(
    stream: bool, tokens: bool
) -> None:
    # a parsable answer whose log-probability is not a number: the endpoint's fault, as a malformed stream is
    fleet = FakeFleet("a:1", "b:1")
    original = fleet.handle
    bad = {"index": 0, "text": "x", "logprobs": {"tokens": ["x"], "token_logprobs": ["oops"]}, "finish_reason": "stop"}

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions"):
            fleet["a:1"].bodies.append({})
            return httpx.Response(200, json={"choices": [bad]})
        return await original(request)

    fleet.transport.handler = handle
    async with engine(fleet, stream=stream) as e:
        e.endpoints[1].sent = 1  # a:1 first
        updates = [u async for u in e.generate("Q", SamplingParams(seed=2), "r1", tokens=tokens)]
    assert updates[-1].finished and updates[-1].text == "b:1 seed=2" and len(fleet["a:1"].bodies) == 1
    assert e.endpoints[0].strikes == 1 and "not an OpenAI response" in (e.endpoints[0].last_error or "")
    if tokens:  # each of b's tokens once, none of a's
        assert [lp for u in updates for lp in u.new_token_logprobs or ()] == [-0.5, -0.5]
    else:
        assert len(updates) == 1
