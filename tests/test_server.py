"""The HTTP API through httpx's ASGI transport, on the scripted engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step, toks
from tests.serving import by_index

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "s3cret-key"


@contextlib.asynccontextmanager
async def serving(engine: ScriptedEngine, settings: ServerSettings | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app on an open orchestrator, and a client talking to it in-process."""
    settings = settings or ServerSettings(max_n=8, max_body_bytes=20_000, max_prompt_chars=500)
    async with Orchestrator(engine, max_n=32) as orch:
        app = create_app(orch, settings, prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def test_native_result_json(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = by_index(
            {0: Step("four", mean_logprob=-2.0), 1: Step("4", mean_logprob=-0.5), 2: Step("4", mean_logprob=-1.0)}
        )
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 3, "params": {"seed": 7, "max_tokens": 9}})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["n"] == 3 and result["prompt"] == "2+2?"
        assert [c["index"] for c in result["candidates"]] == [1, 2, 0]  # mean log-prob, best first
        assert [c["rank"] for c in result["candidates"]] == [1, 2, 3]
        assert result["best"]["text"] == "4"
        assert result["candidates"][0]["spec"]["params"]["seed"] == 8  # seed + index
        assert {c.params.max_tokens for c in scripted.history} == {9}
        assert result["usage"] == {"prompt_tokens": 9, "completion_tokens": 12}
        assert abs(sum(c["confidence"] for c in result["candidates"]) - 1) < 1e-9
        assert "engines" not in result  # what the server's engines run with stays on the server
        streamed = (await client.post("/v1/nbest/stream", json={"prompt": "2+2?", "n": 2})).text
        assert '"ranked"' in streamed or "event: ranked" in streamed
        assert '"engines"' not in streamed


async def test_native_strategy_and_rerankers(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = by_index({0: Step("A"), 1: Step("B"), 2: Step("B"), 3: Step("B")})
        r = await client.post(
            "/v1/nbest", json={"prompt": "pick", "n": 4, "strategy": "ladder:0.2-1.0", "rerankers": ["vote=2", "logprob"]}
        )
        assert r.status_code == 200, r.text
        result = r.json()
        temps = sorted(c["spec"]["params"]["temperature"] for c in result["candidates"])
        assert temps[0] == pytest.approx(0.2) and temps[-1] == pytest.approx(1.0)
        assert set(result["best"]["scores"]) == {"vote", "mean_logprob"}
        assert result["best"]["text"] == "B"
        assert result["answers"][0]["support"] == [1, 2, 3]


async def test_chat_completions_all_and_best(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = by_index({0: Step("low", mean_logprob=-3.0), 1: Step("high", mean_logprob=-0.1)})
        body = {
            "model": "nbest",
            "messages": [{"role": "user", "content": "hi"}],
            "n": 2,
            "temperature": 0.7,
            "seed": 1,
            "stop": "\n",
        }
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["object"] == "chat.completion"
        assert [c["message"]["content"] for c in data["choices"]] == ["high", "low"]
        assert [c["index"] for c in data["choices"]] == [0, 1]
        meta = data["choices"][0]["nbest"]
        assert meta["rank"] == 1 and meta["index"] == 1 and meta["spec"]["params"]["temperature"] == 0.7
        assert 0.5 < meta["confidence"] <= 1
        assert scripted.history[-1].params.stop == ["\n"]
        assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] > 0

        r = await client.post("/v1/chat/completions", json={**body, "nbest": {"return": "best"}})
        assert [c["message"]["content"] for c in r.json()["choices"]] == ["high"]


async def test_completions_with_logprobs(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = by_index({}, Step("text", tokens=3, mean_logprob=-0.5))
        r = await client.post("/v1/completions", json={"prompt": "Once", "n": 2, "max_tokens": 5, "logprobs": 1})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["text"] == "text"
        assert choice["logprobs"]["token_logprobs"] == [-0.5, -0.5, -0.5]
        call = scripted.history[-1]
        assert call.prompt == "Once"  # completion style: the text verbatim, no chat template
        assert call.params.max_tokens == 5 and call.params.top_logprobs == 1


async def test_models_health_metrics(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        r = await client.get("/v1/models")
        assert r.json()["data"][0]["id"] == "nbest"
        assert (await client.get("/healthz")).json()["status"] == "ok"
        await client.post("/v1/nbest", json={"prompt": "x", "n": 2})
        text = (await client.get("/metrics")).text
        assert 'nbest_requests_total{route="/v1/nbest",status="200"}' in text
        assert 'nbest_candidates_total{outcome="ok"}' in text
        assert "nbest_request_latency_seconds_bucket" in text
        assert "nbest_in_flight_requests 0.0" in text


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "words"),
    [
        ("/v1/nbest", b"{not json", 400, "body", "malformed JSON"),
        ("/v1/nbest", b"[1, 2]", 400, "body", "JSON object"),
        ("/v1/nbest", b"", 400, "body", "empty"),
        ("/v1/nbest", b'{"prompt": "x", "n": 0}', 422, "n", "greater than or equal to 1"),
        ("/v1/nbest", b'{"prompt": "x", "n": 9}', 422, "n", "at most 8"),
        ("/v1/nbest", b'{"prompt": "x", "n": "many"}', 422, "n", "valid integer"),
        ("/v1/nbest", b'{"prompt": "x", "params": {"temperature": "hot"}}', 422, "params.temperature", "valid number"),
        ("/v1/nbest", b'{"prompt": "x", "params": {"temperature": 0.001}}', 422, "params.temperature", "at least 0.01"),
        ("/v1/nbest", b'{"prompt": "x", "colour": "red"}', 422, "colour", "Extra inputs"),
        ("/v1/nbest", b'{"prompt": 5}', 422, "prompt", "prompt: Input should be a valid string"),
        ("/v1/nbest", json.dumps({"prompt": "x" * 501}).encode(), 422, "prompt", "at most 500 characters"),
        ("/v1/nbest", b'{"prompt": "x", "strategy": "zigzag"}', 422, "strategy", "unknown strategy"),
        ("/v1/nbest", b'{"prompt": "x", "strategy": "@/etc/passwd"}', 422, "strategy", "not read over HTTP"),
        ("/v1/nbest", b'{"prompt": "x", "rerankers": ["cross:/tmp/model"]}', 422, "rerankers[0]", "not offered"),
        ("/v1/nbest/stream", b'{"prompt": "x", "n": -1}', 422, "n", "greater than or equal to 1"),
        ("/v1/chat/completions", b'{"messages": []}', 422, "messages", "at least 1"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "n": 100}', 422, "n", "at most 8"),
        ("/v1/chat/completions", b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}', 404, "model",
         "not served"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "nbest": {"return": "some"}}', 422,
         "nbest.return", "'best' or 'all'"),
        ("/v1/completions", b'{"prompt": "x", "temperature": 3}', 422, "temperature", "less than or equal to 2"),
        ("/v1/choices", b'{"chosen": 0}', 422, None, "exactly one of result_id or result"),
        ("/v1/choices", b'{"result_id": "nope", "chosen": 0}', 404, "result_id", "no recent result"),
    ],
)  # fmt: skip
async def test_bad_input(scripted: ScriptedEngine, path: str, body: bytes, status: int, param: str | None, words: str) -> None:
    async with serving(scripted) as client:
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert words in error["message"]
        assert error["param"] == param
        # the server keeps serving
        ok = await client.post("/v1/nbest", json={"prompt": "still there?", "n": 1})
        assert ok.status_code == 200


async def test_oversize_body(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        r = await client.post("/v1/nbest", json={"prompt": "x" * 30_000})
        assert r.status_code == 413
        assert "at most 20000 bytes" in r.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while reading
            for _ in range(30):
                yield b" " * 1000

        r = await client.post("/v1/nbest", content=chunks())
        assert r.status_code == 413
        assert (await client.post("/v1/nbest", json={"prompt": "ok", "n": 1})).status_code == 200


async def test_api_key(scripted: ScriptedEngine) -> None:
    async with serving(scripted, ServerSettings(api_key=KEY)) as c:
        assert (await c.get("/healthz")).status_code == 200  # open
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
            for method, path in (("POST", "/v1/nbest"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/"),
                                 ("GET", "/v1/choices"), ("GET", "/v1/settings")):  # fmt: skip
                r = await c.request(method, path, headers=headers, json={"prompt": "x"})
                assert r.status_code == 401, (path, headers)
                assert "API key" in r.json()["error"]["message"]
                assert r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/v1/nbest", json={"prompt": "x", "n": 1}, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        assert (await c.get("/v1/models", headers={"x-api-key": KEY})).status_code == 200
        # the page opens with the key in its address (a browser sends no header); only the page does
        assert (await c.get("/", params={"api_key": KEY})).status_code == 200
        assert (await c.get("/", params={"api_key": "wrong"})).status_code == 401
        assert (await c.get("/v1/models", params={"api_key": KEY})).status_code == 401


async def test_too_many_concurrent_requests() -> None:
    gate, both_waiting = asyncio.Event(), asyncio.Event()
    waiting: list[str] = []

    class Gated(ScriptedEngine):
        async def generate(self, prompt, params, request_id):  # type: ignore[no-untyped-def, override]
            waiting.append(request_id)
            if len(waiting) == 2:
                both_waiting.set()
            await gate.wait()
            async for update in super().generate(prompt, params, request_id):
                yield update

    async with serving(Gated(), ServerSettings(max_concurrent=2, retry_after_s=3)) as c:
        busy = [asyncio.create_task(c.post("/v1/nbest", json={"prompt": "x", "n": 1})) for _ in range(2)]
        await both_waiting.wait()
        r = await c.post("/v1/nbest", json={"prompt": "x", "n": 1})
        assert r.status_code == 429
        assert r.headers["retry-after"] == "3"
        assert "busy" in r.json()["error"]["message"]
        assert (await c.get("/healthz")).status_code == 200  # not counted
        gate.set()
        assert [t.status_code for t in await asyncio.gather(*busy)] == [200, 200]
        assert (await c.post("/v1/nbest", json={"prompt": "x", "n": 1})).status_code == 200


async def test_failed_candidates_are_reported(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = by_index({0: Step(error=RuntimeError("boom"))}, Step("fine"))
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 2})
        data = r.json()
        assert [c["message"]["content"] for c in data["choices"]] == ["fine"]
        assert data["nbest"]["failed"][0]["index"] == 0 and "boom" in data["nbest"]["failed"][0]["error"]

        scripted.respond = by_index({}, Step(error=RuntimeError("down")))
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 2})
        assert r.status_code == 502 and "all 2 candidates failed" in r.json()["error"]["message"]


async def test_choices_post_and_page(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        result = (await client.post("/v1/nbest", json={"prompt": "q", "n": 3})).json()
        r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": 2, "ranking": [2, 0, 1], "user": "ana"})
        assert r.status_code == 201, r.text
        r = await client.post("/v1/choices", json={"result": result, "chosen": 0, "edited_text": "better"})
        assert r.status_code == 201
        r = await client.post("/v1/choices", json={"result": result, "chosen": 7})
        assert r.status_code == 422 and r.json()["error"]["param"] == "chosen"
        r = await client.post("/v1/choices", json={"result": result, "chosen": 2, "ranking": [2, 2]})
        assert r.status_code == 422 and r.json()["error"]["param"] == "ranking"
        page = (await client.get("/v1/choices", params={"limit": 1})).json()
        assert page["total"] == 2 and len(page["data"]) == 1
        first = page["data"][0]
        assert (first["chosen"], first["ranking"], first["user"]) == (2, [2, 0, 1], "ana")
        second = (await client.get("/v1/choices", params={"offset": 1})).json()["data"][0]
        assert second["edited_text"] == "better" and second["result"]["id"] == result["id"]
        r = await client.get("/v1/choices", params={"limit": "lots"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "limit"


async def test_fifty_concurrent_choices(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        result = (await client.post("/v1/nbest", json={"prompt": "q", "n": 4})).json()
        posts = [
            client.post("/v1/choices", json={"result_id": result["id"], "chosen": i % 4, "user": f"u{i}"}) for i in range(50)
        ]
        replies = await asyncio.gather(*posts)
        assert [r.status_code for r in replies] == [201] * 50
        assert len({r.json()["id"] for r in replies}) == 50
        page = (await client.get("/v1/choices", params={"limit": 500})).json()
        assert page["total"] == 50
        assert sorted(c["user"] for c in page["data"]) == sorted(f"u{i}" for i in range(50))


async def test_page_is_served(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        r = await client.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'id="prompt"' in r.text and "/v1/nbest/stream" in r.text
        assert "innerHTML" not in r.text


async def test_openapi_describes_the_bodies(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        doc = (await client.get("/openapi.json")).json()
        body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ChatBody"}
        schemas = doc["components"]["schemas"]
        assert "nbest" in schemas["ChatBody"]["properties"] and "prompt" in schemas["NbestBody"]["properties"]
        assert schemas["SamplingParams"]["properties"]["top_p"]["description"].startswith("Nucleus sampling")
        assert (await client.get("/docs")).status_code == 200


async def test_rerankers_are_built_once(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        for _ in range(2):
            r = await client.post("/v1/nbest", json={"prompt": "x", "n": 2, "rerankers": ["vote", "logprob=2"]})
            assert r.status_code == 200
        first = dict(service._rerankers)
        assert len(first) == 2  # one per canonical config: vote, logprob
        vote = next(r for r in first.values() if r.name == "vote")
        # the same config however it is spelled (and whatever its weight) reuses the built reranker
        for spelling in (["vote"], [{"kind": "vote", "extract": "auto"}], ["vote=1.0001", "logprob=3"]):
            r = await client.post("/v1/nbest", json={"prompt": "x", "n": 2, "rerankers": spelling})
            assert r.status_code == 200
        assert service._rerankers == first and service._rerankers[next(k for k in first if '"vote"' in k)] is vote


# -- adaptive sampling and pruning over HTTP -----------------------------------------------------
# Token streams of tests/test_pruning.py (window 2, two warm-up candidates, keep 0.5): the
# warm-up candidates' lowest groups are 2.0 and 3.0, the threshold their median 2.5; candidate 2
# falls to (3 + 1) / 2 = 2.0 at its third token and is stopped there; candidate 3 stays at 2.6.
PRUNE = "0.5:2:2"


def pruning_steps() -> dict[int, Step]:
    """Candidates 0-3 as above (candidate 2 is pruned after 3 tokens under ``PRUNE``)."""
    warm_low = toks([("The answer", 3.0), (" is", 3.0), (" 4", 2.0), (".", 2.0)])
    warm_high = toks([("The answer", 4.0), (" is", 4.0), (" 4", 3.0), (".", 3.0)])
    weak = toks([("The answer", 3.0), (" is", 3.0), (" 7", 1.0), (".", 1.0), (" Sure", 1.0)])
    strong = toks([("The answer", 3.0), (" is", 2.6), (" 4", 2.6), (".", 3.0)])
    return {i: Step(stream=s, token_delay=0.01) for i, s in enumerate([warm_low, warm_high, weak, strong])}


async def test_native_prune_keeps_the_pruned_candidate_unranked(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index(pruning_steps())
    async with serving(scripted) as client:
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 4, "prune": PRUNE, "rerankers": ["vote"]})
        assert r.status_code == 200, r.text
        result = r.json()
        pruned = [c for c in result["candidates"] if c["finish_reason"] == "pruned"]
        assert [(c["index"], c["text"], c["num_tokens"]) for c in pruned] == [(2, "The answer is 7", 3)]
        assert (pruned[0]["rank"], pruned[0]["confidence"], pruned[0]["error"]) == (None, None, None)
        assert pruned[0]["signals"] is not None  # its confidence signals stay visible
        assert sorted(c["rank"] for c in result["candidates"] if c["rank"] is not None) == [1, 2, 3]
        assert [a["support"] for a in result["answers"]] == [[0, 1, 3]]  # the pruned "7" does not vote
        assert result["usage"]["completion_tokens"] == 4 + 4 + 3 + 4  # the pruned candidate's tokens count
        rid = f"{result['id']}-2"
        assert scripted.aborted == [rid] and scripted.yielded[rid] == 3  # stopped at the engine, not read to the end
        assert all(call.params.top_logprobs == 5 for call in scripted.history)  # pruning asked for alternatives


async def test_prune_on_an_engine_without_token_updates_is_422() -> None:
    class FinalOnly(ScriptedEngine):
        token_updates = False

    engine = FinalOnly()
    async with serving(engine) as client:
        for path, body, param in [
            ("/v1/nbest", {"prompt": "x", "n": 4, "prune": "0.9:2"}, "prune"),
            ("/v1/nbest/stream", {"prompt": "x", "n": 4, "prune": "0.9:2"}, "prune"),
            ("/v1/completions", {"prompt": "x", "n": 4, "nbest": {"prune": "0.9:2"}}, "nbest.prune"),
        ]:
            r = await client.post(path, json=body)
            assert r.status_code == 422, r.text
            assert r.json()["error"]["param"] == param and "cannot report tokens" in r.json()["error"]["message"]
        # n <= warm-up: nothing to prune, so nothing to refuse
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 2, "prune": "0.9:2"})
        assert r.status_code == 200, r.text
    assert len(engine.history) == 2  # only the last request reached the engine


async def test_prune_needs_alternatives_within_the_servers_limit(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index(pruning_steps())
    async with serving(scripted, ServerSettings(max_n=8, max_top_logprobs=2)) as client:
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 4, "prune": PRUNE})
        assert r.status_code == 422 and r.json()["error"]["param"] == "prune"
        assert "at most 2 (max_top_logprobs)" in r.json()["error"]["message"]
        assert scripted.history == []
        # asking for alternatives within the limit, pruning reads those
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 4, "prune": PRUNE, "params": {"top_logprobs": 2}})
        assert r.status_code == 200, r.text
        assert [c["index"] for c in r.json()["candidates"] if c["finish_reason"] == "pruned"] == [2]


async def test_native_until_stops_after_the_first_wave(scripted: ScriptedEngine) -> None:
    # wave 1 agrees (four "4"); wave 2 is still generating when the rule stops: it is aborted
    scripted.respond = by_index({i: Step("4", delay=0.05 if i < 4 else 5.0) for i in range(8)})
    async with serving(scripted) as client:
        body = {"prompt": "2+2?", "n": 8, "until": "beta:0.95", "wave": 4, "rerankers": ["vote"]}
        r = await client.post("/v1/nbest", json=body)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["samples_used"] == 4 and sorted(c["index"] for c in result["candidates"]) == [0, 1, 2, 3]
        assert result["answers"][0]["support"] == [0, 1, 2, 3]
        assert result["usage"]["completion_tokens"] == 4 * 4  # the aborted wave had reported no token
        assert sorted(rid.rsplit("-", 1)[1] for rid in scripted.aborted) == ["4", "5", "6", "7"]
        assert scripted.running == set()
        # the Result is remembered: a choice can name it
        r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": 0})
        assert r.status_code == 201, r.text
        metrics = (await client.get("/metrics")).text
        assert 'nbest_candidates_total{outcome="ok"} 4.0' in metrics


async def test_native_until_with_prune_and_esc(scripted: ScriptedEngine) -> None:
    # ESC windows of 4 over complete candidates. Wave 1 (0-3): candidate 2 is pruned, so three
    # complete ones: no full window yet. Wave 2 (4-7) fills the window 0, 1, 3, 4 (all "4"):
    # stop; wave 3 (8-11), generating meanwhile, is aborted.
    steps = pruning_steps()
    steps.update({i: Step("The answer is 4.", delay=0.05) for i in range(4, 8)})
    scripted.respond = by_index(steps, Step("The answer is 5.", delay=120.0))
    async with serving(scripted, ServerSettings(max_n=16)) as client:
        body = {"prompt": "2+2?", "n": 12, "until": "esc:4", "prune": PRUNE, "rerankers": ["vote:number"]}
        r = await client.post("/v1/nbest", json=body)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["samples_used"] == 8 and sorted(c["index"] for c in result["candidates"]) == list(range(8))
        assert [c["index"] for c in result["candidates"] if c["finish_reason"] == "pruned"] == [2]
        assert [c["rank"] for c in result["candidates"] if c["index"] == 2] == [None]
        assert [a["support"] for a in result["answers"]] == [[0, 1, 3, 4, 5, 6, 7]]
        assert result["usage"]["completion_tokens"] == 4 + 4 + 3 + 4 + 4 * 4
        assert sorted(int(rid.rsplit("-", 1)[1]) for rid in scripted.aborted) == [2, 8, 9, 10, 11]
        assert scripted.running == set()


async def test_a_pruned_candidate_cannot_be_chosen_nor_rejected(scripted: ScriptedEngine) -> None:
    from nbest.server.export import dpo_pairs

    scripted.respond = by_index(pruning_steps())
    async with serving(scripted) as client:
        result = (await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 4, "prune": PRUNE})).json()
        r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": 2})
        assert r.status_code == 422 and r.json()["error"]["param"] == "chosen"
        assert "pruned (stopped after 3 tokens" in r.json()["error"]["message"]
        r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": 3})
        assert r.status_code == 201, r.text
        store = client.app.state.service.prefs  # type: ignore[attr-defined]
        pairs = list(dpo_pairs(store.page(0, 10)))
        # the warm-up texts equal the chosen one; the pruned "The answer is 7" is no rejected answer
        assert pairs == []


# -- the server's defaults for until/wave/prune (nbest serve --until/--wave/--prune) ----------------
# A field the body leaves out takes the server's; a field it sets wins; a field set to null is off.


def _sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event in ``text`` (the OpenAI routes' unnamed events: "message")."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data) if data != "[DONE]" else {}))
    return events


def _first_wave_agrees(engine: ScriptedEngine) -> None:
    """Candidates 0-3 answer "4" quickly; the rest take 5 s (a rule that stops after 4 aborts them)."""
    engine.respond = by_index({i: Step("4", delay=0.05 if i < 4 else 5.0) for i in range(8)})


DEFAULT_UNTIL = ServerSettings(max_n=8, until="beta:0.95", wave=4)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (ServerSettings(), {"until": None, "wave": None, "prune": None}),
        (DEFAULT_UNTIL, {"until": "beta:0.95", "wave": 4, "prune": None}),
        (ServerSettings(until="esc:4", prune="low:8"), {"until": "esc:4", "wave": None, "prune": "low:8"}),
    ],
)
async def test_settings_route_reports_the_servers_defaults(
    scripted: ScriptedEngine, settings: ServerSettings, expected: dict[str, object]
) -> None:
    """What `nbest serve --until/--wave/--prune` set is readable, as given (null: unset), and
    documented in the OpenAPI schema."""
    async with serving(scripted, settings) as client:
        r = await client.get("/v1/settings")
        assert r.status_code == 200, r.text
        assert r.json() == expected
        schema = (await client.get("/openapi.json")).json()
        reply = schema["paths"]["/v1/settings"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert reply == {"$ref": "#/components/schemas/ServerDefaults"}
        assert set(schema["components"]["schemas"]["ServerDefaults"]["properties"]) == {"until", "wave", "prune"}
    assert scripted.history == []  # reading them generates nothing


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/nbest", {"prompt": "2+2?", "n": 8, "rerankers": ["vote"]}),
        ("/v1/nbest/stream", {"prompt": "2+2?", "n": 8, "rerankers": ["vote"]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "2+2?"}], "n": 8, "nbest": {"rerankers": ["vote"]}}),
        ("/v1/completions", {"prompt": "2+2?", "n": 8, "stream": True, "stream_options": {"include_usage": True},
                             "nbest": {"rerankers": ["vote"]}}),
    ],
)  # fmt: skip
async def test_the_servers_until_applies_when_the_request_sets_none(
    scripted: ScriptedEngine, path: str, body: dict[str, object]
) -> None:
    _first_wave_agrees(scripted)
    async with serving(scripted, DEFAULT_UNTIL) as client:
        r = await client.post(path, json=body)
        assert r.status_code == 200, r.text
        if path == "/v1/nbest":
            used = r.json()["samples_used"]
        elif path == "/v1/nbest/stream":
            used = next(data for name, data in _sse(r.text) if name == "ranked")["samples_used"]
        elif not body.get("stream"):
            used = r.json()["nbest"]["samples_used"]
            assert len(r.json()["choices"]) == 4
        else:
            used = next(data for _, data in _sse(r.text) if data.get("usage"))["nbest"]["samples_used"]
    assert used == 4  # the first wave of 4 agreed; the second was aborted
    assert sorted(int(rid.rsplit("-", 1)[1]) for rid in scripted.aborted) == [4, 5, 6, 7]
    assert scripted.running == set()


async def test_a_requests_own_until_wins_and_null_turns_the_servers_off(scripted: ScriptedEngine) -> None:
    _first_wave_agrees(scripted)
    async with serving(scripted, DEFAULT_UNTIL) as client:
        # its own rule: esc:2 stops after its first window of 2; the server's wave of 4 goes with the server's rule
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8, "until": "esc:2", "rerankers": ["vote"]})
        assert r.status_code == 200, r.text
        assert r.json()["samples_used"] == 2
        # null: no rule, all n at once (no candidate is aborted)
        scripted.respond = by_index({}, Step("4", delay=0.01))
        scripted.aborted.clear()
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8, "until": None, "rerankers": ["vote"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["candidates"]) == 8 and r.json()["samples_used"] is None and scripted.aborted == []
        body = {"messages": [{"role": "user", "content": "2+2?"}], "n": 8, "nbest": {"until": None}}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert len(r.json()["choices"]) == 8
        # with no rule, a wave is an error, named with what this server has
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 4, "until": None, "wave": 2})
        assert r.status_code == 422 and r.json()["error"]["param"] == "wave"
        assert "only used with a stopping rule" in r.json()["error"]["message"]


async def test_a_requests_wave_runs_the_servers_rule(scripted: ScriptedEngine) -> None:
    _first_wave_agrees(scripted)
    service_rule = ServerSettings(max_n=8, until="esc:4")  # waves of 4 (its window) unless the request says
    async with serving(scripted, service_rule) as client:
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8, "wave": 8, "rerankers": ["vote"]})
        assert r.status_code == 200, r.text
        # one wave of 8: the window of 0-3 agrees but nothing was left to cancel once it was ranked
        assert r.json()["samples_used"] == 8 and scripted.aborted == []


async def test_the_servers_prune_applies_unless_the_request_says_otherwise(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index(pruning_steps())
    async with serving(scripted, ServerSettings(max_n=8, prune=PRUNE)) as client:
        r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 4, "rerankers": ["vote"]})
        assert r.status_code == 200, r.text
        assert [c["index"] for c in r.json()["candidates"] if c["finish_reason"] == "pruned"] == [2]
        for own in (None, "0.5:4:2"):  # null: no pruning; a warm-up of 4 leaves nothing to prune in n = 4
            r = await client.post("/v1/nbest", json={"prompt": "2+2?", "n": 4, "prune": own, "rerankers": ["vote"]})
            assert r.status_code == 200, r.text
            assert [c["finish_reason"] for c in r.json()["candidates"]] == ["stop"] * 4
        body = {"prompt": "2+2?", "n": 4, "nbest": {"prune": None}}
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["nbest"]["pruned"] == [] and len(r.json()["choices"]) == 4


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "x", "until": "forever"}, "until", "use beta:P, dirichlet:P, confidence:P or esc:W"),
        ({"prompt": "x", "until": "forever"}, "until", "null: no stopping rule"),
        (  # the rule's message names the field and echoes the value once
            {"prompt": "x", "until": "forever"},
            "until",
            "until 'forever': unknown stopping rule 'forever'; use beta:P, dirichlet:P, confidence:P or esc:W; "
            "null: no stopping rule",
        ),
        ({"prompt": "x", "prune": "most"}, "prune", "null: no pruning"),
        ({"prompt": "x", "prune": "2"}, "prune.keep", "(0, 1] (got 2.0); null: no pruning"),
        ({"prompt": "x", "n": 2, "wave": 3}, "wave", "at most n = 2"),
    ],
)
async def test_bad_options_name_the_field_and_what_is_allowed(
    scripted: ScriptedEngine, body: dict[str, object], param: str, words: str
) -> None:
    async with serving(scripted, DEFAULT_UNTIL) as client:
        r = await client.post("/v1/nbest", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == param and words in r.json()["error"]["message"]
    assert scripted.history == []


async def test_the_servers_prune_on_an_engine_without_token_updates_is_refused_at_start() -> None:
    from nbest.errors import ConfigError

    class FinalOnly(ScriptedEngine):
        token_updates = False

    async with Orchestrator(FinalOnly(name="final")) as orch:
        with pytest.raises(ConfigError, match=r"prune: route 'default' .* cannot report tokens") as info:
            create_app(orch, ServerSettings(prune="0.9"), prefs=PreferenceStore(":memory:"))
        assert info.value.parameter == "prune"
        create_app(orch, ServerSettings(until="beta:0.9"), prefs=PreferenceStore(":memory:"))  # no pruning: served


@pytest.mark.parametrize(
    ("given", "param", "words"),
    [
        ({"until": "forever"}, "until", "until 'forever': unknown stopping rule 'forever'; use beta:P"),
        ({"until": "beta:1.5"}, "until", "until 'beta:1.5': threshold: must be a probability in (0, 1)"),
        ({"until": "esc:" + "9" * 100}, "until", "at most 64 characters"),
        ({"wave": 4}, "wave", "wave: only used with a stopping rule"),
        ({"until": "esc:4", "wave": 0}, "wave", "greater than or equal to 1"),
        ({"until": "esc:4", "wave": 65}, "wave", "wave: at most max_n = 64"),
        ({"until": "esc:4", "wave": 9, "max_n": 8}, "wave", "at most max_n = 8"),
        ({"prune": "0.9:4:16:2"}, "prune", "KEEP[:WARMUP[:WINDOW]]"),
        ({"prune": "0.9:0"}, "prune.warmup", "from 1 to 64"),
        ({"prune": "x" * 10_000}, "prune", "at most 64 characters"),
        ({"prune": "0.9", "max_top_logprobs": 4}, "prune", "max_top_logprobs is 4: raise it to at least 5"),
    ],
)
def test_server_settings_check_the_defaults(given: dict[str, object], param: str, words: str) -> None:
    from nbest.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        ServerSettings(**given)
    assert info.value.parameter == param and words in str(info.value), str(info.value)


def test_server_settings_keep_good_defaults_as_given() -> None:
    settings = ServerSettings(until="dirichlet:0.9:weighted", wave=2, prune="low:8")
    assert (settings.until, settings.wave, settings.prune) == ("dirichlet:0.9:weighted", 2, "low:8")
    assert repr(settings.stopping_rule()) == "Dirichlet(threshold=0.9, weighted=True)"
    assert str(settings.prune_policy()) == "0.1:8:16"
    assert ServerSettings().stopping_rule() is None and ServerSettings().prune_policy() is None
