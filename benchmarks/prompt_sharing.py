"""Prompt sharing: N = 8 candidates of one long prompt vs N = 1, and vLLM's prefix-cache hits.

A few-shot text prompt of about 1,000 tokens (built here: numbered question /
answer pairs), 64 new tokens per candidate (``ignore_eos``), temperature 0.8,
top_p 0.95, seeds seed + i. Every round starts its prompt with its own line,
so nothing is cached from an earlier round.

  (a) wall time: ``Orchestrator.run`` at N = 8 vs N = 1 on the embedded
      default engine; the ratio N=8 / N=1 (goal <= 1.5: decoding 8 sequences
      together costs little more than 1 while the prompt is computed once);
  (b) prefix-cache hits: the same N = 8 requests sent straight to vLLM's
      ``AsyncLLM`` (``RequestOutput.num_cached_tokens`` summed over the
      candidates) against the ideal (N-1)*B*floor((P-1)/B), B = the KV-cache
      block size (128 on vLLM's CPU backend), P = prompt tokens:
        - all at once (what nbest sends: every candidate its own request, at once);
        - first prefill first: candidate 0 alone until its first token, then the other N-1.

The last line is (a)'s median ratio over ``--rounds`` rounds.

``--block-size`` sets vLLM's KV-cache block size (on CPU a multiple of 32),
to see whether a smaller block shares more of the prompt than it costs.

    python benchmarks/prompt_sharing.py [--rounds 3] [--shots 28] [--block-size 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest.types import CandidateSpec, Request, SamplingParams

N = 8
TOKENS = 64
TEMPERATURE = 0.8
TOP_P = 0.95
SEED = 1234


def few_shot(tag: str, shots: int) -> str:
    """A few-shot arithmetic prompt; ``tag`` makes its first line (and so every cache block) unique."""
    lines = [f"Exercise set {tag}. Answer each question with one sentence, as in the examples."]
    for i in range(shots):
        a, b = 7 * i + 3, 11 * i + 5
        lines.append(f"Question {i + 1}: what is {a} plus {b}? Answer: {a} plus {b} is {a + b}.")
    lines.append("Question: what is 1234 plus 4321? Then write a short story about that number. Answer:")
    return "\n".join(lines)


class Seeded:
    """N candidates, seeded top-p, seeds seed + i."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        seed = request.params.seed or 0
        return [
            CandidateSpec(index=i, params=request.params.model_copy(update={"seed": seed + i}), strategy="seeded")
            for i in range(request.n)
        ]


def params(seed: int) -> SamplingParams:
    return SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, seed=seed, max_tokens=TOKENS, ignore_eos=True)


async def nbest_run(orch: Orchestrator, prompt: str, n: int, seed: int) -> float:
    started = time.perf_counter()
    result = await orch.run(Request(prompt=prompt, n=n, chat=False, params=params(seed)), strategy=Seeded())
    seconds = time.perf_counter() - started
    assert not result.failed and len(result.candidates) == n, result.failed
    return seconds


async def raw_run(engine: VLLMEngine, prompt: str, seed: int, first_alone: bool) -> tuple[float, int]:
    """N requests straight to AsyncLLM; (seconds, prefix-cache hits summed over them)."""
    from vllm.sampling_params import RequestOutputKind

    llm = engine._llm
    assert llm is not None
    tokens = {"prompt_token_ids": list(engine._tokenizer.encode(prompt))}
    cached = [0] * N
    first_token = anyio.Event()

    async def one(i: int) -> None:
        vparams = engine.sampling_params(params(seed + i))
        vparams.output_kind = RequestOutputKind.DELTA
        async for out in llm.generate(tokens, vparams, request_id=f"share-{seed}-{i}"):
            cached[i] = max(cached[i], out.num_cached_tokens or 0)
            if i == 0:
                first_token.set()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0)
        if first_alone:
            await first_token.wait()
        for i in range(1, N):
            tg.start_soon(one, i)
    return time.perf_counter() - started, sum(cached)


async def main(rounds: int, shots: int, block_size: int | None) -> None:
    engine = VLLMEngine.default(**({"block_size": block_size} if block_size else {}))
    async with Orchestrator(engine) as orch:
        await engine.start()
        assert engine._llm is not None
        block = engine._llm.vllm_config.cache_config.block_size
        prefix_caching = engine._llm.vllm_config.cache_config.enable_prefix_caching
        p = len(engine._tokenizer.encode(few_shot("0000", shots)))
        ideal = (N - 1) * block * ((p - 1) // block)
        print(f"prompt sharing: few-shot prompt of {p} tokens ({shots} shots), N={N} vs 1, {TOKENS} tokens each "
              f"(ignore_eos), seeded top-p; block size {block}, prefix caching {prefix_caching}; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        await nbest_run(orch, few_shot("warm", shots), N, 1)  # warm-up
        ratios: list[float] = []
        hits: dict[bool, list[int]] = {False: [], True: []}
        walls: dict[bool, list[float]] = {False: [], True: []}
        for r in range(rounds):
            one = await nbest_run(orch, few_shot(f"{r}-a", shots), 1, SEED + r)
            eight = await nbest_run(orch, few_shot(f"{r}-b", shots), N, SEED + r)
            ratios.append(eight / one)
            line = f"round {r + 1}: nbest N=1 {one:6.2f} s  N={N} {eight:6.2f} s  ratio {eight / one:5.2f}"
            for first_alone in (False, True) if r % 2 == 0 else (True, False):
                seconds, cached = await raw_run(engine, few_shot(f"{r}-{first_alone}", shots), SEED + r, first_alone)
                hits[first_alone].append(cached)
                walls[first_alone].append(seconds)
            line += (f"   AsyncLLM all at once {walls[False][-1]:6.2f} s, {hits[False][-1]} cached;"
                     f"  first prefill first {walls[True][-1]:6.2f} s, {hits[True][-1]} cached")  # fmt: skip
            print(line, flush=True)
    for first_alone, label in ((False, "all at once"), (True, "first prefill first")):
        print(f"  {label:20s} cached prompt tokens {statistics.median(hits[first_alone]):7.0f} of the ideal "
              f"(N-1)*B*floor((P-1)/B) = {ideal} ({statistics.median(hits[first_alone]) / ideal:.2f}); "
              f"wall {statistics.median(walls[first_alone]):.2f} s")  # fmt: skip
    print(f"median of {rounds} rounds: wall time N={N} / N=1 through nbest")
    print(f"ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=28, help="Question/answer pairs in the prompt [default: 28, ~1,000 tokens].")
    parser.add_argument("--block-size", type=int, default=None, help="KV-cache block size [default: vLLM's, 128 on CPU].")
    args = parser.parse_args()
    anyio.run(main, args.rounds, args.shots, args.block_size, backend="asyncio")
