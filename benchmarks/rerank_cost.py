"""Reranking cost: each reranker's time as a fraction of the generation it ranks.

For N = 8, 32, 128 the embedded default model (SmolLM2-135M-Instruct, on the
real vLLM engine) generates N candidates of exactly 60 tokens (``ignore_eos``),
once per N; that wall time is the denominator. Then, with the engine closed
(so the two do not compete for the CPU), each reranker scores those same N
candidates; its time is the median of ``--repeats`` runs after one warm-up
(which also loads the embedding model):

  logprob        MeanLogProb
  vote           MajorityVote (auto extractor)
  embed          EmbeddingConsensus (all-MiniLM-L6-v2, embedded)
  mbr:chrf       MBR with chrF, exact (O(N²) utility calls)
  mbr:chrf:agg   MBR with chrF, reference aggregation (O(N))
  source         SourceSimilarity (all-MiniLM-L6-v2, embedded)

``--reuse`` (for slow machines) generates only N = 8 and 32, builds the 128
candidates by sampling with replacement from the 32 and takes 4x the N = 32
generation time for N = 128; the output says so when it is used.

The exact vs aggregate MBR speed-up is reported at N = 128, and the largest
reranker-time / generation-time fraction at N = 8 among the rerankers in their
default configuration (all of the above except the non-default
``mbr:chrf:agg``).

Then, with the engine running, what reranking adds after generation: at N = 8
the orchestrator generates and ranks with the two embedding rerankers (embed and
source, one shared all-MiniLM-L6-v2), ``--repeats`` times per arm, the arms
alternating: *before* (``Ranker(prepare=False)``: every text encoded once the
last candidate is in) and *after* (the default: each candidate encoded as it
finishes, while the others generate). Two shapes: *staggered* (candidate i
stops after 32 + 4i tokens, ignore_eos: candidates finish at different steps,
as sampled answers of different lengths do) and *equal* (all 60 tokens: all
finish in the same engine step, so nothing can be hidden and only the shared
encoding of the two rerankers helps). Reported: the median of
``timings.rerank_after_last_s / timings.generate_s`` per arm and shape, and the
texts the rerankers had encoded in ``rank`` (not prepared). The last line is
``ratio: X``, the *after* fraction of the staggered shape. Goal: below 0.03.

``--torch-threads T`` sets torch's intra-op threads for the embedding
rerankers. On a small, busy CPU torch's default (one thread per core) can
spin-wait against other processes and run an order of magnitude slower than
one thread; the output names the setting used.

    python benchmarks/rerank_cost.py [--repeats 5] [--reuse] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Sequence

import anyio

from nbest import Orchestrator, VLLMEngine, rerankers
from nbest.rerankers.base import Reranker
from nbest.types import Candidate, CandidateSpec, Request

SIZES = (8, 32, 128)
TOKENS = 60
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SOURCE = "Ein Leuchtturmwärter findet eine Flaschenpost und beschließt, ihrem Absender zu antworten."
DEFAULTS = ("logprob", "vote", "embed", "mbr:chrf", "source")


def build_rerankers() -> dict[str, Reranker]:
    embedder = rerankers.Embedder()  # one model for both embedding rerankers, loaded in the warm-up
    return {
        "logprob": rerankers.MeanLogProb(),
        "vote": rerankers.MajorityVote(),
        "embed": rerankers.EmbeddingConsensus(embedder),
        "mbr:chrf": rerankers.MBR("chrf", method="exact"),
        "mbr:chrf:agg": rerankers.MBR("chrf", method="aggregate"),
        "source": rerankers.SourceSimilarity(embedder),
    }


Arms = dict[bool, tuple[float, float, float]]
"""Per arm (prepare off / on): median after-last fraction, median generate_s, mean texts encoded in rank."""


async def generate(sizes: Sequence[int], repeats: int) -> tuple[dict[int, float], dict[int, list[Candidate]], dict[str, Arms]]:
    times: dict[int, float] = {}
    texts: dict[int, list[Candidate]] = {}
    async with Orchestrator(VLLMEngine.default(), max_n=max(sizes)) as orch:
        await orch.generate(PROMPT, n=2, max_tokens=8, seed=1)  # warm-up: first-request compilation
        for n in sizes:
            started = time.perf_counter()
            result = await orch.generate(PROMPT, n=n, temperature=1.0, max_tokens=TOKENS, ignore_eos=True, seed=100 + n)
            times[n] = time.perf_counter() - started
            assert not result.failed, result.failed[0].error
            texts[n] = sorted(result.candidates, key=lambda c: c.index)
        arms = {shape: await hidden_arms(orch, repeats, shape == "staggered") for shape in ("staggered", "equal")}
    return times, texts, arms


class Staggered:
    """Candidate i stops after 32 + 4i tokens (ignore_eos): candidates finish at different steps."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        return [
            CandidateSpec(
                index=i,
                params=request.params.model_copy(update={"seed": (request.params.seed or 0) + i, "max_tokens": 32 + 4 * i}),
            )
            for i in range(request.n)
        ]


async def hidden_arms(orch: Orchestrator, repeats: int, staggered: bool) -> Arms:
    embedder = rerankers.Embedder()
    embedder.load()
    rankers = {
        prepare: rerankers.Ranker([rerankers.EmbeddingConsensus(embedder), rerankers.SourceSimilarity(embedder)], prepare=prepare)
        for prepare in (False, True)
    }
    fractions: dict[bool, list[float]] = {False: [], True: []}
    generation: dict[bool, list[float]] = {False: [], True: []}
    late: dict[bool, list[int]] = {False: [], True: []}
    for r in range(repeats + 1):
        for prepare in (False, True):
            request = orch.request(PROMPT, n=8, temperature=1.0, max_tokens=TOKENS, ignore_eos=True, seed=200 + r, source=SOURCE)
            encoded, reused = embedder.encoded, embedder.reused
            result = await orch.run(request, rerankers=rankers[prepare], strategy=Staggered() if staggered else None)
            assert not result.failed and not result.warnings, result.warnings
            if r == 0:
                continue  # warm-up of both arms
            t = result.timings
            fractions[prepare].append(t.rerank_after_last_s / t.generate_s)
            generation[prepare].append(t.generate_s)
            # texts encoded in rank: all of them without prepare; with it, those not reused from the cache
            assert embedder.encoded - encoded >= 9
            in_rank = 17 - (embedder.reused - reused)  # embed asks for 8 texts, source for 9
            late[prepare].append(in_rank)
    return {
        p: (statistics.median(fractions[p]), statistics.median(generation[p]), statistics.mean(late[p])) for p in (False, True)
    }


async def time_reranker(reranker: Reranker, request: Request, candidates: list[Candidate], repeats: int) -> float:
    await reranker.score(request, candidates)  # warm-up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        scores = await reranker.score(request, candidates)
        runs.append(time.perf_counter() - started)
        assert len(scores) == len(candidates)
    return statistics.median(runs)


async def main(repeats: int, reuse: bool, torch_threads: int | None) -> None:
    import torch

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    generated = (8, 32) if reuse else SIZES
    load = os.getloadavg()[0]
    gen_times, candidates, arms = await generate(generated, repeats)
    notes = []
    if reuse:
        rng = random.Random(0)
        pool = candidates[32]
        candidates[128] = [c.model_copy(update={"index": i}) for i, c in enumerate(rng.choices(pool, k=128))]
        gen_times[128] = gen_times[32] * 4  # linear in N: a lower bound on CPU, where batching saturates
        notes.append("N=128: candidates sampled with replacement from the 32 generated; generation time = 4 x N=32")
    request = Request(prompt=PROMPT, source=SOURCE, n=max(SIZES))
    ranked = build_rerankers()
    fractions: dict[tuple[str, int], float] = {}
    seconds: dict[tuple[str, int], float] = {}
    print(f"generation: {TOKENS} tokens per candidate, embedded default model, real vLLM engine ({os.cpu_count()} CPUs)")
    threads = "default" if torch_threads is None else "set"
    print(f"rerankers: torch intra-op threads = {torch.get_num_threads()} ({threads}); load average {os.getloadavg()[0]:.1f}")
    for n in SIZES:
        tokens = sum(c.num_tokens for c in candidates[n]) / n
        print(f"  N={n:<4} generate {gen_times[n]:7.2f} s   ({tokens:.0f} tokens/candidate)")
    for note in notes:
        print(f"  note: {note}")
    print()
    print(f"{'reranker':<14}" + "".join(f"{'N=' + str(n):>22}" for n in SIZES))
    for name, reranker in ranked.items():
        row = f"{name:<14}"
        for n in SIZES:
            t = await time_reranker(reranker, request, candidates[n], repeats)
            seconds[name, n] = t
            fractions[name, n] = t / gen_times[n]
            row += f"{t * 1000:11.2f} ms ({fractions[name, n]:.4f})"
        print(row)
    print("  (median time of each reranker; in brackets: fraction of the generation time for the same N)")
    print()
    exact, agg = seconds["mbr:chrf", 128], seconds["mbr:chrf:agg", 128]
    print(f"MBR chrF at N=128: exact {exact * 1000:.1f} ms, aggregate {agg * 1000:.1f} ms, speed-up {exact / agg:.1f}x")
    worst = max(DEFAULTS, key=lambda name: fractions[name, 8])
    print(f"largest fraction at N=8 among default rerankers: {worst}: {fractions[worst, 8]:.4f}")
    print()
    print("reranking after the last candidate, N=8, embed + source (MiniLM), engine running:")
    print(f"  load average {load:.1f} before the engine started")
    for shape, label in (("staggered", "32..60 tokens"), ("equal", f"{TOKENS} tokens each")):
        print(f"  {shape} ({label}):")
        for prepare, arm in ((False, "before (prepare off)"), (True, "after (prepare on) ")):
            fraction, generate_s, late = arms[shape][prepare]
            detail = f"(generate {generate_s:.2f} s, {late:.1f} texts encoded in rank)"
            print(f"    {arm}  rerank_after_last / generate = {fraction:.4f}   {detail}")
    print("  (medians over the repeats; goal for the staggered after-fraction < 0.03)")
    print(f"ratio: {arms['staggered'][True][0]:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per reranker and N (median)")
    parser.add_argument("--reuse", action="store_true", help="do not generate N=128: resample the 32 candidates")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads for the embedding rerankers")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TQDM_DISABLE", "1")
    anyio.run(main, args.repeats, args.reuse, args.torch_threads, backend="asyncio")
