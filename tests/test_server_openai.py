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
