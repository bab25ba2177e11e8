"""Fan-out overhead: per-candidate requests through the orchestrator vs vLLM's native ``n``.

Same engine, same prompt, N = 8 candidates x 64 new tokens (``ignore_eos`` so
both arms generate exactly the same number of tokens):

  (a) the orchestrator, 8 candidates with 8 different settings (temperatures
      0.6 .. 1.3, all with top_p = 0.95, seeds seed + i), one engine request each;
  (b) vLLM's own ``n=8`` in one request (temperature 1.0, top_p = 0.95).

vLLM splits ``n`` into per-sample child requests, so (a) should cost nothing
extra. Rounds alternate a/b; the last line is the median throughput ratio a/b.

    python benchmarks/fanout_overhead.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest.types import CandidateSpec, Request, SamplingParams

N = 8
TOKENS = 64
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


class EightSettings:
    """Eight candidates, eight temperatures, top_p 0.95 for all."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        seed = request.params.seed or 0
        return [
            CandidateSpec(
                index=i,
                params=request.params.model_copy(update={"temperature": 0.6 + 0.1 * i, "top_p": 0.95, "seed": seed + i}),
                strategy=f"t={0.6 + 0.1 * i:.1f}",
            )
            for i in range(request.n)
        ]


async def run_orchestrator(orch: Orchestrator, seed: int) -> tuple[float, int]:
    request = Request(prompt=PROMPT, n=N, params=SamplingParams(max_tokens=TOKENS, ignore_eos=True, seed=seed))
    started = time.perf_counter()
    result = await orch.run(request, strategy=EightSettings())
    elapsed = time.perf_counter() - started
    assert not result.failed, result.failed
    return elapsed, result.usage.completion_tokens


async def run_native(engine: VLLMEngine, seed: int) -> tuple[float, int]:
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import RequestOutputKind

    assert engine._llm is not None
    prompt = {"prompt_token_ids": engine.render(Request(prompt=PROMPT).rendered())}
    params = VSamplingParams(
        n=N, temperature=1.0, top_p=0.95, seed=seed, max_tokens=TOKENS, ignore_eos=True,
        logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY,
    )  # fmt: skip
    started = time.perf_counter()
    final = None
    async for out in engine._llm.generate(prompt, params, request_id=f"native-{seed}"):
        final = out
    elapsed = time.perf_counter() - started
    assert final is not None
    return elapsed, sum(len(c.token_ids) for c in final.outputs)


async def main(rounds: int) -> None:
    engine = VLLMEngine.default()
    async with Orchestrator(engine) as orch:
        await run_orchestrator(orch, seed=10_000)  # warm-up, both paths
        await run_native(engine, seed=10_001)
        ratios = []
        for r in range(rounds):
            ta, na = await run_orchestrator(orch, seed=r * 100)
            tb, nb = await run_native(engine, seed=r * 100 + 50)
            ratio = (na / ta) / (nb / tb)
            ratios.append(ratio)
            print(
                f"round {r + 1}: orchestrator {na / ta:7.1f} tok/s ({na} tokens)   "
                f"native n={N} {nb / tb:7.1f} tok/s ({nb} tokens)   a/b {ratio:.3f}"
            )
    print(f"median of {rounds} rounds, N={N} x {TOKENS} tokens")
    print(f"ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    anyio.run(main, parser.parse_args().rounds, backend="asyncio")
