"""Tokens generated through the HTTP API with adaptive sampling and pruning.

The same four one-step arithmetic word problems, asked for step-by-step
reasoning, through ``POST /v1/nbest`` on the embedded model (in-process
``VLLMEngine.default()``, the app over ``httpx.ASGITransport``): n = 16,
T = 0.8, at most 96 tokens, seeds 100 + i, ``vote:number``, in four modes:
plain, ``prune: "0.9"``, ``prune: "low"``, ``until: "beta:0.95"`` with
``wave: 4``. Each mode prints the completion tokens of ``usage`` summed over
the problems (pruned candidates' tokens and a cancelled wave's included), the
candidates pruned and the samples used. Token counts are exact; wall times on
a shared CPU are noise. Then one ``/v1/nbest/stream`` request with ``until``
prints the SSE events it sent.

    python benchmarks/server_adaptive.py
"""

from __future__ import annotations

import json
import time

import anyio
import httpx

from nbest import Orchestrator, VLLMEngine
from nbest.server import PreferenceStore, ServerSettings, create_app

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have? Think step by step, then give the number.",
    "A box holds 4 pens. How many pens are in 3 boxes? Think step by step, then give the number.",
    "Sara had 10 sweets and ate 4. How many are left? Think step by step, then give the number.",
    "There are 6 birds on a tree and 2 fly away. How many birds are left? Think step by step, then give the number.",
]
MODES: dict[str, dict[str, object]] = {
    "plain": {},
    "prune 0.9": {"prune": "0.9"},
    "prune low": {"prune": "low"},
    "until beta:0.95": {"until": "beta:0.95", "wave": 4},
}
PARAMS = {"temperature": 0.8, "max_tokens": 96}


async def main() -> None:
    async with Orchestrator(VLLMEngine.default()) as orch:
        app = create_app(orch, ServerSettings(model_name="smollm2"), prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test", timeout=900) as c:
            spent: dict[str, int] = {}
            for mode, extra in MODES.items():
                tokens = pruned = used = 0
                started = time.perf_counter()
                for i, question in enumerate(QUESTIONS):
                    body = {"prompt": question, "n": 16, "params": {**PARAMS, "seed": 100 + i}, "rerankers": ["vote:number"]}
                    r = await c.post("/v1/nbest", json={**body, **extra})
                    r.raise_for_status()
                    result = r.json()
                    tokens += result["usage"]["completion_tokens"]
                    pruned += sum(1 for x in result["candidates"] if x["finish_reason"] == "pruned")
                    used += result["samples_used"] if result["samples_used"] is not None else len(result["candidates"])
                wall = round(time.perf_counter() - started, 1)
                spent[mode] = tokens
                print(json.dumps({"mode": mode, "completion_tokens": tokens, "pruned": pruned, "samples": used, "wall_s": wall}))
            body = {"prompt": QUESTIONS[0], "n": 16, "until": "beta:0.95", "wave": 4, "params": {**PARAMS, "seed": 7}}
            r = await c.post("/v1/nbest/stream", json={**body, "rerankers": ["vote:number"]})
            names = [block.split("\n")[0].removeprefix("event: ") for block in r.text.strip().split("\n\n")]
            print("SSE events:", {name: names.count(name) for name in dict.fromkeys(names)})
            print(f"ratio: {spent['prune low'] / spent['plain']:.3f}  (completion tokens, prune low / plain)")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
