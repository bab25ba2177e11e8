"""Votes that count meaning: plain vs clustered majority vote on sentence answers.

The embedded default model (SmolLM2-135M-Instruct, real vLLM engine) answers
``benchmarks/data/capitals_sentences.jsonl`` ("What is the capital of X? Answer
in one sentence."; 24 ``dev`` items used while building the clustering, 24
``test`` items held out) with N = 8 candidates at T = 0.8 (seed 0, 48 tokens).
The candidates are generated once (``--samples PATH`` keeps them, so a second
run only scores) and every method ranks the same candidates with
:func:`nbest.evaluation.score_samples`, ``--match auto`` (the gold capital
appears in the chosen sentence):

  vote:none        MajorityVote(cluster="none"): whole normalised texts vote
  vote             MajorityVote() — the default: the shared short answer span
  vote:embedding   MajorityVote(cluster="embedding"): near-duplicate embeddings
  logprob          MeanLogProb
  vote:cisc:none   MajorityVote(weight="cisc", cluster="none"): CISC weights (mean log-probability), whole texts
  vote:cisc        MajorityVote(weight="cisc"): CISC weights over span clusters

Printed per split: accuracy at N = 1, 2, 4, 8 (the mean over the subsets
score_samples draws; at N = 8 there is one), oracle@8, and at N = 8 the ECE
and AUROC of the top answer's confidence and the mean number of answers
(clusters) per prompt.

``--torch-threads`` (default 1) sets torch's threads for the embedding model:
on a small, busy CPU its default (one per core) can run many times slower.

    python benchmarks/semantic_vote.py [--samples /tmp/capitals.json] [-n 8] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest.evaluation import Fields, generate_samples, read_dataset, score_samples
from nbest.evaluation.evaluate import EvalSample
from nbest.rerankers import MajorityVote, MeanLogProb, Ranker
from nbest.types import Candidate, Request, SamplingParams

DATA = Path(__file__).parent / "data" / "capitals_sentences.jsonl"


async def generate(n: int, temperature: float, max_tokens: int) -> tuple[list[EvalSample], float]:
    items = read_dataset(DATA, Fields())
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=0)
    engine = VLLMEngine.default()
    start = time.perf_counter()
    async with Orchestrator(engine) as orch:
        samples = await generate_samples(orch, items, n=n, params=params)
    return samples, time.perf_counter() - start


def save(samples: list[EvalSample], seconds: float, path: Path) -> None:
    data = {
        "generate_s": seconds,
        "samples": [
            {
                "item": s.item.model_dump(mode="json"),
                "request": s.request.model_dump(mode="json"),
                "candidates": [c.model_dump(mode="json") for c in s.candidates],
            }
            for s in samples
        ],
    }
    path.write_text(json.dumps(data))


def load(path: Path) -> tuple[list[EvalSample], float]:
    from nbest.evaluation import EvalItem

    data = json.loads(path.read_text())
    samples = [
        EvalSample(
            item=EvalItem.model_validate(s["item"]),
            request=Request.model_validate(s["request"]),
            candidates=[Candidate.model_validate(c) for c in s["candidates"]],
        )
        for s in data["samples"]
    ]
    return samples, float(data["generate_s"])


async def score(samples: list[EvalSample], generate_s: float) -> None:
    methods = {
        "vote:none": Ranker([MajorityVote(cluster="none")]),
        "vote": Ranker([MajorityVote()]),
        "vote:embedding": Ranker([MajorityVote(cluster="embedding")]),
        "logprob": Ranker([MeanLogProb()]),
        "vote:cisc:none": Ranker([MajorityVote(weight="cisc", cluster="none")]),
        "vote:cisc": Ranker([MajorityVote(weight="cisc")]),
    }
    splits = {
        "dev": [s for s in samples if s.item.id.startswith("dev")],
        "test": [s for s in samples if s.item.id.startswith("test")],
    }
    for split, chosen in splits.items():
        report = await score_samples(chosen, methods, generate_s=generate_s, dataset=f"capitals_sentences ({split})")
        top = report.levels[-1]
        accuracies = " / ".join(str(level.n) for level in report.levels)
        print(f"{split}: {len(chosen)} prompts, oracle@{top.n} {100 * (top.oracle.accuracy or 0):.1f} %")
        print(f"  {'method':15s} accuracy at N = {accuracies}; at N = {top.n}: ECE, AUROC, answers per prompt")
        for name, ranker in methods.items():
            level = top.rerankers[name]
            sizes = [len((await ranker.rank(s.request, s.candidates)).answers) for s in chosen]
            by_n = " / ".join(f"{100 * (lv.rerankers[name].quality.accuracy or 0):.1f}" for lv in report.levels)
            auroc = "-" if level.auroc is None else f"{level.auroc:.2f}"
            ece = "-" if level.ece is None else f"{level.ece:.3f}"
            print(f"  {name:15s} {by_n} %   ECE {ece}  AUROC {auroc}  answers {statistics.mean(sizes):.2f}")
        if split == "test":  # the held-out split: what the clusters win over whole-text votes
            whole = top.rerankers["vote:none"].quality.accuracy or 0
            span = top.rerankers["vote"].quality.accuracy or 0
            what = f"held-out accuracy at N = {top.n}, span-clustered vote / whole-text vote"
            print(f"ratio: {span / whole:.3f}  ({what})" if whole else "ratio: n/a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=None, help="JSON file keeping the generated candidates")
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("-t", "--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for the embedding model (0: torch's default)")
    args = parser.parse_args()
    if args.torch_threads > 0:  # on a small, busy CPU torch's default threads spin against other processes
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.samples is not None and args.samples.exists():
        samples, seconds = load(args.samples)
    else:
        samples, seconds = anyio.run(generate, args.n, args.temperature, args.max_tokens, backend="asyncio")
        if args.samples is not None:
            save(samples, seconds, args.samples)
    anyio.run(score, samples, seconds, backend="asyncio")


if __name__ == "__main__":
    main()
