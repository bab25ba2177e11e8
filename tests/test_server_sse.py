"""Server-Sent Events over a real socket: incremental events, and a client that
disconnects aborts its engine requests."""

from __future__ import annotations

import json
import time

import httpx

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index, running
from tests.test_server import PRUNE, pruning_steps


def _events(lines: list[str]) -> tuple[str, dict]:  # type: ignore[type-arg]
    name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
    data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
    return name, json.loads(data)


def read_events(response: httpx.Response):  # type: ignore[no-untyped-def]
    """Yield (event, data) as each event's blank line arrives."""
    block: list[str] = []
    for line in response.iter_lines():
        if line:
            block.append(line)
        elif block:
            yield _events(block)
            block = []


def _app(engine: ScriptedEngine, tmp_path):  # type: ignore[no-untyped-def]
    return create_app(
        lambda: Orchestrator(engine, close_engines=False), ServerSettings(), prefs=PreferenceStore(tmp_path / "p.db")
    )


def test_candidates_arrive_before_the_slow_one_finishes(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted.respond = by_index({0: Step("fast"), 1: Step("quick"), 2: Step("slow", delay=4.0)})
    with running(_app(scripted, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as client:
        seen = []
        with client.stream("POST", "/v1/nbest/stream", json={"prompt": "go", "n": 3}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for name, data in read_events(r):
                if name == "candidate" and not seen:
                    # the first candidate is on the wire while the slow one still generates
                    assert any(rid.endswith("-2") for rid in scripted.running)
                    assert not any(rid.endswith("-2") for rid in scripted.finished)
                seen.append((name, data))
        names = [name for name, _ in seen]
        assert names == ["start", "candidate", "candidate", "candidate", "ranked"]
        assert seen[3][1]["text"] == "slow"
        assert {seen[1][1]["text"], seen[2][1]["text"]} == {"fast", "quick"}
        ranked = seen[-1][1]
        assert [c["rank"] for c in ranked["candidates"]] == [1, 2, 3]
        assert scripted.aborted == []
        # the ranked result is remembered: a choice can name it
        r = client.post("/v1/choices", json={"result_id": ranked["id"], "chosen": 2})
        assert r.status_code == 201


def test_disconnect_aborts_engine_requests(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted.respond = by_index({0: Step("first")}, Step("never", delay=120.0))
    with running(_app(scripted, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/nbest/stream", json={"prompt": "go", "n": 4}) as r:
            for name, data in read_events(r):
                if name == "candidate":
                    assert data["text"] == "first"
                    break  # leaving the block closes the connection mid-stream
        deadline = time.monotonic() + 20
        while len(scripted.aborted) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(rid.rsplit("-", 1)[1] for rid in scripted.aborted) == ["1", "2", "3"]
        assert not scripted.running
        assert client.get("/healthz").status_code == 200  # still serving
        metrics = client.get("/metrics").text
        assert "nbest_in_flight_requests 0.0" in metrics


def test_openai_stream_over_socket(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted.respond = by_index({0: Step("a", mean_logprob=-2.0), 1: Step("b", mean_logprob=-0.2)})
    body = {"messages": [{"role": "user", "content": "x"}], "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    with running(_app(scripted, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(line) for line in lines[:-1]]
        texts = {c["choices"][0]["index"]: c["choices"][0]["delta"]["content"] for c in chunks[:2]}
        assert texts == {0: "a", 1: "b"}
        finals = [c["choices"][0] for c in chunks[2:4]]
        assert [(f["index"], f["nbest"]["rank"], f["finish_reason"]) for f in finals] == [(1, 1, "stop"), (0, 2, "stop")]
        assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_client_gone_before_a_plain_reply_aborts_too(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted.respond = by_index({0: Step("quick")}, Step("never", delay=120.0))
    with running(_app(scripted, tmp_path)) as url:
        for path, body in (
            ("/v1/nbest", {"prompt": "go", "n": 3}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "go"}], "n": 3}),
        ):
            before = len(scripted.aborted)
            with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=1.0)) as client:
                try:
                    client.post(path, json=body)
                    raise AssertionError("the reply should not have come")
                except httpx.ReadTimeout:
                    pass  # the client gives up and closes the connection
            deadline = time.monotonic() + 20
            while len(scripted.aborted) < before + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(scripted.aborted) == before + 2, path
        assert not scripted.running


def test_stream_with_until_says_which_streamed_candidates_count(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # wave 1 (0-3) agrees after 0.3 s; candidate 4 of wave 2 finished at once and was streamed,
    # 5-7 are still generating when the rule stops: they are aborted, 4 is dropped
    steps = {i: Step("4", delay=0.3) for i in range(4)} | {4: Step("4")}
    scripted.respond = by_index(steps, Step("5", delay=120.0))
    body = {"prompt": "2+2?", "n": 8, "until": "beta:0.95", "wave": 4, "rerankers": ["vote"]}
    with running(_app(scripted, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/nbest/stream", json=body) as r:
            events = list(read_events(r))
        names = [name for name, _ in events]
        assert names == ["start", *["candidate"] * 5, "dropped", "ranked"], names
        assert events[1][1]["index"] == 4  # streamed as it finished, before wave 1 was ranked
        assert sorted(data["index"] for name, data in events if name == "candidate") == [0, 1, 2, 3, 4]
        assert events[-2][1] == {"indices": [4], "samples_used": 4}
        ranked = events[-1][1]
        assert ranked["samples_used"] == 4 and sorted(c["index"] for c in ranked["candidates"]) == [0, 1, 2, 3]
        assert ranked["usage"]["completion_tokens"] == 5 * 4  # the dropped candidate's tokens were generated
        assert sorted(rid.rsplit("-", 1)[1] for rid in scripted.aborted) == ["5", "6", "7"]
        assert not scripted.running


def test_stream_with_prune_sends_the_pruned_candidate_as_pruned(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    scripted.respond = by_index(pruning_steps())
    body = {"prompt": "2+2?", "n": 4, "prune": PRUNE, "rerankers": ["vote"]}
    with running(_app(scripted, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as client:
        with client.stream("POST", "/v1/nbest/stream", json=body) as r:
            events = list(read_events(r))
        assert [name for name, _ in events] == ["start", *["candidate"] * 4, "ranked"]
        streamed = {data["index"]: data for name, data in events if name == "candidate"}
        assert streamed[2]["finish_reason"] == "pruned" and streamed[2]["text"] == "The answer is 7"
        assert streamed[2]["num_tokens"] == 3 and streamed[2]["rank"] is None
        assert all(streamed[i]["finish_reason"] == "stop" for i in (0, 1, 3))
        ranked = events[-1][1]
        assert [c["index"] for c in ranked["candidates"] if c["rank"] is None] == [2]
        assert ranked["samples_used"] is None and ranked["usage"]["completion_tokens"] == 15


def test_openai_stream_leaves_pruned_and_uncounted_candidates_out(scripted: ScriptedEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def stream(url: str, body: dict) -> list[dict]:  # type: ignore[type-arg]
        with httpx.Client(base_url=url, timeout=30) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        return [json.loads(line) for line in lines[:-1]]

    base = {"messages": [{"role": "user", "content": "x"}], "stream": True, "stream_options": {"include_usage": True}}
    with running(_app(scripted, tmp_path)) as url:
        scripted.respond = by_index(pruning_steps())
        chunks = stream(url, {**base, "n": 4, "nbest": {"prune": PRUNE}})
        texts = [(c["choices"][0]["index"], c["choices"][0]["delta"].get("content")) for c in chunks if c["choices"]]
        assert sorted(index for index, text in texts if text) == [0, 1, 3]  # no chunk for the pruned candidate
        finals = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert sorted(f["index"] for f in finals) == [0, 1, 3] and {f["finish_reason"] for f in finals} == {"stop"}
        assert chunks[-1]["usage"]["completion_tokens"] == 15
        assert [p["index"] for p in chunks[-1]["nbest"]["pruned"]] == [2]

        # until: candidate 4 finished before the rule stopped but does not count: never sent
        scripted.respond = by_index({i: Step("4", delay=0.3) for i in range(4)} | {4: Step("4")}, Step("5", delay=120.0))
        chunks = stream(url, {**base, "n": 8, "nbest": {"until": "beta:0.95", "wave": 4, "rerankers": ["vote"]}})
        sent = {c["choices"][0]["index"] for c in chunks if c["choices"]}
        assert sent == {0, 1, 2, 3}
        assert chunks[-1]["nbest"]["samples_used"] == 4 and chunks[-1]["usage"]["completion_tokens"] == 5 * 4
