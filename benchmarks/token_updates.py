"""The cost of observing tokens: VLLMEngine with and without token updates.

The same seeded workload in every arm: 8 chat prompts x N = 8 candidates x 64
new tokens (``ignore_eos``, temperature 0.8, seeds fixed per candidate), all
64 requests sent at once to one in-process engine (the embedded model):

  final        ``generate(...)``: vLLM sends the final output only (FINAL_ONLY);
               what every caller that does not observe tokens pays
  tokens       ``generate(..., tokens=True)``: a partial update per engine step
               (vLLM DELTA outputs), nothing done with them
  final+top5   final output only, with ``top_logprobs=5`` (the extra
               log-probabilities alone, without streaming)
  tracked      ``tokens=True`` with ``top_logprobs=5``, every token fed to a
               ConfidenceTracker as it arrives (what online pruning does)

Rounds are mirrored (final, tokens, final+top5, tracked, then the reverse) so
drift on a shared machine hits every arm alike. Throughput is generated tokens
per second; beside it, the CPU time this process spends per 1000 tokens (vLLM's
output handling and detokenizer, nbest's conversion, the tracker; the engine
core runs in its own process), which a loaded machine disturbs less than wall
time. Ratios are observed / unobserved, medians of the per-round ratios;
the ``ratio:`` line is tracked / final, all that observing costs.
A last figure times the construction of one partial update with and without
pydantic validation (``CandidateUpdate.model_construct``): validation in
pydantic-core is the faster of the two, so partial updates are validated.

    python benchmarks/token_updates.py [--rounds 3] [--prompts 8] [--n 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from remote_overhead import PROMPTS  # the same eight chat prompts as the remote-overhead workload

from nbest import VLLMEngine
from nbest.rerankers.confidence import ConfidenceTracker
from nbest.types import CandidateUpdate, ChatMessage, SamplingParams


@dataclass(frozen=True)
class Arm:
    name: str
    tokens: bool
    top_logprobs: int
    track: bool


ARMS = [
    Arm("final", tokens=False, top_logprobs=0, track=False),
    Arm("tokens", tokens=True, top_logprobs=0, track=False),
    Arm("final+top5", tokens=False, top_logprobs=5, track=False),
    Arm("tracked", tokens=True, top_logprobs=5, track=True),
]


async def run_arm(engine: VLLMEngine, arm: Arm, prompts: int, n: int, tokens: int, tag: str) -> tuple[float, float, int, int]:
    """One pass of the workload: (seconds, CPU seconds of this process, generated tokens, updates seen)."""
    counts = [0, 0]

    async def one(p: int, i: int) -> None:
        params = SamplingParams(
            temperature=0.8, seed=1000 * p + i, max_tokens=tokens, ignore_eos=True, top_logprobs=arm.top_logprobs
        )
        prompt = [ChatMessage(role="user", content=PROMPTS[p % len(PROMPTS)])]
        tracker = ConfidenceTracker(16) if arm.track else None
        final = None
        async for update in engine.generate(prompt, params, f"{tag}-{p}-{i}", tokens=arm.tokens):
            counts[1] += 1
            if tracker is not None:
                for lp, alts in zip(update.new_token_logprobs or (), update.new_top_logprobs or (), strict=True):
                    tracker.update(lp, alts)
            final = update
        assert final is not None and final.finished and final.num_tokens == tokens, final
        if tracker is not None:
            assert tracker.tokens == tokens
        counts[0] += final.num_tokens

    started, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for p in range(prompts):
            for i in range(n):
                tg.start_soon(one, p, i)
    return time.perf_counter() - started, time.process_time() - cpu, counts[0], counts[1]


def construct_cost(repeat: int = 200_000) -> tuple[float, float]:
    """Microseconds to build one partial update (one new token, 5 alternatives): validated, and with model_construct."""
    alts = [{"a": -0.1, "b": -2.0, "c": -3.0, "d": -4.0, "e": -5.0}]
    fields = {"text": "some text so far", "num_tokens": 10, "cumulative_logprob": -3.0, "new_token_logprobs": [-0.1]}
    results = []
    build: Callable[..., CandidateUpdate]
    for build in (CandidateUpdate, CandidateUpdate.model_construct):
        started = time.perf_counter()
        for _ in range(repeat):
            build(**fields, new_top_logprobs=alts)
        results.append((time.perf_counter() - started) / repeat * 1e6)
    return results[0], results[1]


async def main(rounds: int, prompts: int, n: int, tokens: int) -> None:
    engine = VLLMEngine.default()
    rates: dict[str, list[float]] = {arm.name: [] for arm in ARMS}
    cpu_ms: dict[str, list[float]] = {arm.name: [] for arm in ARMS}  # this process's CPU per 1000 tokens
    async with engine:
        for arm in ARMS:  # warm-up: every path once
            await run_arm(engine, arm, 2, 2, 8, f"warm-{arm.name}")
        for r in range(rounds):
            order = ARMS if r % 2 == 0 else list(reversed(ARMS))
            line = []
            for arm in order:
                seconds, cpu, generated, updates = await run_arm(engine, arm, prompts, n, tokens, f"r{r}-{arm.name}")
                rates[arm.name].append(generated / seconds)
                cpu_ms[arm.name].append(cpu / generated * 1e6)
                line.append(
                    f"{arm.name} {generated / seconds:6.1f} tok/s {cpu / generated * 1e6:5.0f} ms CPU/1k tok ({updates} updates)"
                )
            print(f"round {r + 1}: " + "   ".join(line), flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"median of {rounds} rounds, {prompts} prompts x N={n} x {tokens} tokens:")
    for name, value in median.items():
        print(f"  {name:<11} {value:7.1f} tok/s, {statistics.median(cpu_ms[name]):5.0f} ms of this process's CPU per 1000 tokens")
    validated, constructed = construct_cost()
    print(f"one partial update: {validated:.2f} us validated, {constructed:.2f} us with model_construct")

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    print(f"tokens/final {ratio('tokens', 'final'):.3f}   (streaming alone)")
    print(f"final+top5/final {ratio('final+top5', 'final'):.3f}   (five alternatives per token alone)")
    print(f"tracked/final+top5 {ratio('tracked', 'final+top5'):.3f}   (streaming and tracking, same log-probabilities)")
    print(f"ratio: {ratio('tracked', 'final'):.3f}")  # tracked/final: everything observing costs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    anyio.run(main, args.rounds, args.prompts, args.n, args.tokens, backend="asyncio")
