"""The official openai client (async) as the caller, unchanged but for base_url."""

from __future__ import annotations

import httpx
import openai
import pytest

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_openai_client(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index({0: Step("Paris.", mean_logprob=-0.3), 1: Step("Lyon?", mean_logprob=-2.5), 2: Step("Paris.")})
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(api_key="k-123", model_name="smollm2"), prefs=PreferenceStore(":memory:"))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
        async with openai.AsyncOpenAI(base_url="http://nbest.test/v1", api_key="k-123", http_client=http) as client:
            models = await client.models.list()
            assert [m.id for m in models.data] == ["smollm2"]

            reply = await client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Capital of France?"}],
                n=3,
                temperature=0.8,
                max_tokens=12,
                seed=5,
                extra_body={"nbest": {"rerankers": ["vote", "logprob"], "return": "all"}},
            )
            assert [c.message.content for c in reply.choices] == ["Paris.", "Paris.", "Lyon?"]
            meta = [c.model_extra["nbest"] for c in reply.choices]  # type: ignore[index]
            assert [m["rank"] for m in meta] == [1, 2, 3]
            assert meta[0]["confidence"] > meta[2]["confidence"]
            assert meta[0]["spec"]["params"]["seed"] in (5, 7)
            assert set(meta[0]["scores"]) == {"vote", "mean_logprob"}
            assert reply.usage is not None and reply.usage.completion_tokens == 12
            assert {c.params.temperature for c in scripted.history} == {0.8}

            best = await client.completions.create(
                model="smollm2", prompt="The capital of France is", n=3, extra_body={"nbest": {"return": "best"}}
            )
            assert len(best.choices) == 1 and best.choices[0].text == "Paris."

            stream = await client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "Capital?"}], n=3, stream=True
            )
            parts: dict[int, str] = {}
            finish: dict[int, str | None] = {}
            async for chunk in stream:
                for choice in chunk.choices:
                    parts[choice.index] = parts.get(choice.index, "") + (choice.delta.content or "")
                    if choice.finish_reason:
                        finish[choice.index] = choice.finish_reason
            assert parts == {0: "Paris.", 1: "Lyon?", 2: "Paris."}
            assert finish == {0: "stop", 1: "stop", 2: "stop"}

            with pytest.raises(openai.UnprocessableEntityError) as bad:
                await client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "x"}], n=0)
            assert "n:" in str(bad.value)
        async with openai.AsyncOpenAI(
            base_url="http://nbest.test/v1", api_key="wrong", http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app))
        ) as intruder:
            with pytest.raises(openai.AuthenticationError):
                await intruder.models.list()


async def test_openai_client_with_prune_and_until(scripted: ScriptedEngine) -> None:
    """The choices are the complete candidates, ranked: a pruned one is not a choice, and with a
    stopping rule there are as many choices as candidates that count; usage counts every token."""
    from tests.test_server import PRUNE, pruning_steps

    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(model_name="smollm2"), prefs=PreferenceStore(":memory:"))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
        async with openai.AsyncOpenAI(base_url="http://nbest.test/v1", api_key="unused", http_client=http) as client:
            scripted.respond = by_index(pruning_steps())
            reply = await client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "2+2?"}],
                n=4,
                extra_body={"nbest": {"prune": PRUNE, "rerankers": ["vote"]}},
            )
            meta = [c.model_extra["nbest"] for c in reply.choices]  # type: ignore[index]
            assert sorted(m["index"] for m in meta) == [0, 1, 3] and [m["rank"] for m in meta] == [1, 2, 3]
            assert {c.finish_reason for c in reply.choices} == {"stop"}
            assert reply.usage is not None and reply.usage.completion_tokens == 4 + 4 + 3 + 4
            extra = reply.model_extra["nbest"]  # type: ignore[index]
            assert [(p["index"], p["num_tokens"]) for p in extra["pruned"]] == [(2, 3)]
            # signals use their own (default) window, longer than the 3 tokens kept: the whole text's mean
            assert extra["pruned"][0]["signals"]["lowest_group"] == pytest.approx((3 + 3 + 1) / 3)

            scripted.respond = by_index({i: Step("4", delay=0.05) for i in range(4)}, Step("5", delay=120.0))
            completion = await client.completions.create(
                model="smollm2",
                prompt="2+2=",
                n=8,
                extra_body={"nbest": {"until": "beta:0.95", "wave": 4, "rerankers": ["vote"]}},
            )
            assert [c.text for c in completion.choices] == ["4"] * 4  # four of the eight asked for: the rule stopped there
            assert completion.model_extra["nbest"]["samples_used"] == 4  # type: ignore[index]
            assert completion.usage is not None and completion.usage.completion_tokens == 16
            assert sorted(rid.rsplit("-", 1)[1] for rid in scripted.aborted[-4:]) == ["4", "5", "6", "7"]

            with pytest.raises(openai.UnprocessableEntityError) as bad:
                await client.chat.completions.create(
                    model="smollm2", messages=[{"role": "user", "content": "x"}], n=2, extra_body={"nbest": {"wave": 2}}
                )
            assert "nbest.wave: only used with a stopping rule" in str(bad.value)


async def test_openai_client_under_the_servers_until_and_prune(scripted: ScriptedEngine) -> None:
    """``nbest serve --until ... --prune ...``: a body without ``nbest`` gets both; ``None`` in
    ``extra_body`` (JSON null) turns one off; the client's own value wins."""
    from tests.test_server import PRUNE, pruning_steps

    settings = ServerSettings(model_name="smollm2", until="beta:0.95", wave=4, prune=PRUNE)
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, settings, prefs=PreferenceStore(":memory:"))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
        async with openai.AsyncOpenAI(base_url="http://nbest.test/v1", api_key="unused", http_client=http) as client:
            scripted.respond = by_index({i: Step("4", delay=0.05) for i in range(4)}, Step("5", delay=120.0))
            plain = await client.completions.create(model="smollm2", prompt="2+2=", n=8, extra_body={"nbest": {"prune": None}})
            assert [c.text for c in plain.choices] == ["4"] * 4  # the server's rule stopped after the first wave
            assert plain.model_extra["nbest"]["samples_used"] == 4  # type: ignore[index]

            scripted.respond = by_index(pruning_steps())
            pruned = await client.completions.create(model="smollm2", prompt="2+2=", n=4)  # the server's pruning
            assert [p["index"] for p in pruned.model_extra["nbest"]["pruned"]] == [2]  # type: ignore[index]
            assert len(pruned.choices) == 3

            scripted.respond = by_index({}, Step("4", delay=0.01))
            every = await client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "2+2?"}],
                n=6,
                extra_body={"nbest": {"until": None, "prune": None}},
            )
            assert len(every.choices) == 6 and every.model_extra["nbest"]["samples_used"] is None  # type: ignore[index]

            own = await client.completions.create(
                model="smollm2", prompt="2+2=", n=6, extra_body={"nbest": {"until": "esc:3", "prune": None}}
            )
            # its esc window of 3, not the server's wave of 4
            assert own.model_extra["nbest"]["samples_used"] == 3  # type: ignore[index]

            with pytest.raises(openai.UnprocessableEntityError) as bad:
                await client.completions.create(model="smollm2", prompt="x", n=2, extra_body={"nbest": {"prune": "sometimes"}})
            message = str(bad.value)
            assert "nbest.prune 'sometimes': expected KEEP[:WARMUP[:WINDOW]]" in message and "null: no pruning" in message
