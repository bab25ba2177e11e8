"""The HTTP API on the real vLLM engine with the embedded default model."""

from __future__ import annotations

import json

import httpx
import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.server import PreferenceStore, ServerSettings, create_app

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_api_on_the_real_engine(vllm_engine: VLLMEngine) -> None:
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        app = create_app(orch, ServerSettings(model_name="smollm2"), prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test", timeout=300) as c:
            body = {
                "model": "smollm2",
                "messages": [{"role": "user", "content": "Name a colour."}],
                "n": 3, "temperature": 0.8, "max_tokens": 12, "seed": 11, "logprobs": True,
                "nbest": {"rerankers": ["logprob"]},
            }  # fmt: skip
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            data = r.json()
            assert len(data["choices"]) == 3
            assert all(ch["message"]["content"].strip() for ch in data["choices"])
            assert [ch["nbest"]["rank"] for ch in data["choices"]] == [1, 2, 3]
            assert sum(ch["nbest"]["confidence"] for ch in data["choices"]) == pytest.approx(1.0)
            assert sorted(ch["nbest"]["spec"]["params"]["seed"] for ch in data["choices"]) == [11, 12, 13]
            for ch in data["choices"]:
                assert len(ch["logprobs"]["content"]) == ch["nbest"]["num_tokens"] <= 12
            assert data["usage"]["completion_tokens"] == sum(ch["nbest"]["num_tokens"] for ch in data["choices"])
            # same seeds, same texts: the request replays
            again = (await c.post("/v1/chat/completions", json=body)).json()
            assert [ch["message"]["content"] for ch in again["choices"]] == [ch["message"]["content"] for ch in data["choices"]]

            r = await c.post("/v1/nbest/stream", json={"prompt": "Say hi.", "n": 2, "params": {"max_tokens": 8, "seed": 3}})
            events = [block.split("\n") for block in r.text.strip().split("\n\n")]
            names = [lines[0].removeprefix("event: ") for lines in events]
            assert names == ["start", "candidate", "candidate", "ranked"]
            result = json.loads(events[-1][1].removeprefix("data: "))
            assert result["best"]["text"] and result["usage"]["completion_tokens"] > 0
            r = await c.post("/v1/choices", json={"result_id": result["id"], "chosen": result["candidates"][1]["index"]})
            assert r.status_code == 201
            assert (await c.get("/v1/choices")).json()["data"][0]["chosen_rank"] == 2
