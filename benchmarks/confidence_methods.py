"""Confidence-aware sampling on the embedded model: accuracy per token, on a split never tuned on.

The set is ``examples/data/reasoning.jsonl`` (200 generated word problems,
``tuning`` / ``heldout`` splits); every arm uses the same sampling settings and
seeds (T = 0.8, top-5 log-probabilities, 80 tokens at most, stop at
``Question:``), one engine (SmolLM2-135M-Instruct, vLLM on CPU):

1. **Tuning split.** One shared generation (N = 16, plus greedy) scored by
   the plain vote, mean log-probability and each weighted vote; one pruned
   generation per candidate policy. Chosen on this split only: the weighted
   vote with the best accuracy at N = 8 (ties: the best mean over N), and the
   policy that saves the most tokens while its weighted vote stays within one
   point of the plain vote at N = 16 (none does: the one that loses least).
   The temperature of each method's confidence is fitted here too.
2. **Held-out split.** The same, with the chosen policy only, and the fitted
   temperatures applied. The goals read on these rows:

   (a) N = 16: tokens saved by pruning + the weighted vote against plain
       self-consistency (goal >= 40 %), and the accuracy difference (goal:
       within 1 point);
   (b) N = 8: the weighted vote against the plain vote (goal >= +2 points),
       and at every N never below it;
   (c) ECE of the weighted vote's confidence at N = 16 after the tuning
       temperature (goal <= 0.05).

Prints every row, the figures and ``ratio:`` lines (pruned tokens / plain
tokens at N = 16 last); ``--report PATH`` writes both splits' reports as JSON.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/confidence_methods.py [--limit K] [--report out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from statistics import fmean

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest.cli.options import build_ranker
from nbest.evaluation.compare import CompareReport, MethodRow, compare_methods, parse_method, temperatures_of
from nbest.evaluation.dataset import Fields, read_dataset
from nbest.evaluation.table import print_compare
from nbest.rerankers.ranker import Ranker
from nbest.types import SamplingParams

DATA = Path(__file__).resolve().parent.parent / "examples" / "data" / "reasoning.jsonl"
N = 16
PARAMS = SamplingParams(temperature=0.8, top_logprobs=5, max_tokens=80, stop=["Question:"], seed=0)
WEIGHTED = ["vote:cisc", "vote:cisc@mean_confidence", "vote:filter@lowest_group", "vote:borda@self_certainty"]
"""Weighted votes tried on the tuning split (CISC on two signals, DeepConf's filter, Borda on self-certainty)."""
POLICIES = ["low:4:8"]
"""Pruning policies tried on the tuning split (DeepConf-low, 8-token windows: the answers are short). One only,
to keep the run under an hour on two shared cores; add more to let the tuning split choose."""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def rankers_for(texts: list[str]) -> dict[str, Ranker]:
    out = {}
    for text in texts:
        method = parse_method(text)
        if not method.baseline:
            ranker = build_ranker((method.selector,))
            assert ranker is not None
            out[text] = ranker
    return out


def row(report: CompareReport, method: str, n: int) -> MethodRow:
    return next(r for r in report.rows if r.method == method and r.n == n)


async def run_split(
    orch: Orchestrator,
    split: str,
    methods: list[str],
    limit: int | None,
    temperatures: dict[str, float] | None,
    params: SamplingParams = PARAMS,
) -> CompareReport:
    items = read_dataset(DATA, Fields(), split=split, limit=limit)
    started = time.perf_counter()
    report = await compare_methods(
        orch, items, [parse_method(m) for m in methods], rankers_for(methods), n=N, params=params, subsamples=8,
        concurrency=16, temperatures=temperatures, dataset=DATA.name, split=split,
    )  # fmt: skip
    print(f"== {split}: {len(items)} prompts, {time.perf_counter() - started:.0f} s")
    print_compare(report)
    return report


def choose(tuning: CompareReport) -> tuple[str, str]:
    """The weighted vote and the pruning policy, chosen on the tuning split (see the module docs)."""

    def score(method: str) -> tuple[float, float]:
        at = [r.accuracy or 0.0 for r in tuning.rows if r.method == method]
        return row(tuning, method, 8).accuracy or 0.0, fmean(at)

    weighted = max(WEIGHTED, key=score)
    plain = row(tuning, "vote", N)
    options = []
    for policy in POLICIES:
        pruned = row(tuning, f"{weighted}+prune:{policy}", N)
        loss = (plain.accuracy or 0.0) - (pruned.accuracy or 0.0)
        options.append((loss <= 0.01, -pruned.tokens if loss <= 0.01 else -loss, policy))
    return weighted, max(options)[2]


async def main(limit: int | None, params: SamplingParams = PARAMS) -> tuple[CompareReport, CompareReport, str, str]:
    tuning_methods = ["vote", "logprob", *WEIGHTED, "greedy", "oracle"]
    tuning_methods += [f"{m}+prune:{p}" for p in POLICIES for m in ("vote", *WEIGHTED)]
    engine = VLLMEngine.default()
    async with Orchestrator(engine, max_in_flight=64) as orch:
        tuning = await run_split(orch, "tuning", tuning_methods, limit, None, params)
        weighted, policy = choose(tuning)
        print(f"chosen on the tuning split: {weighted}, --prune {policy}")
        pruned = [f"vote+prune:{policy}", f"{weighted}+prune:{policy}"]
        heldout_methods = ["vote", "logprob", *WEIGHTED, "greedy", "oracle", *pruned]
        heldout_methods += [f"{m}+prune:{policy}" for m in WEIGHTED if m != weighted]  # scored on the same generation
        heldout = await run_split(orch, "heldout", heldout_methods, limit, temperatures_of(tuning), params)
    return tuning, heldout, weighted, policy


def summarize(tuning: CompareReport, heldout: CompareReport, weighted: str, policy: str) -> None:
    """Print the goal figures and the ``ratio:`` line."""
    plain16, pruned16 = row(heldout, "vote", N), row(heldout, f"{weighted}+prune:{policy}", N)
    plain8, weighted8 = row(heldout, "vote", 8), row(heldout, weighted, 8)
    saved = 1 - pruned16.tokens / plain16.tokens
    diff16 = 100 * ((pruned16.accuracy or 0) - (plain16.accuracy or 0))
    diff8 = 100 * ((weighted8.accuracy or 0) - (plain8.accuracy or 0))
    below = [r.n for r in heldout.rows if r.method == weighted and (r.accuracy or 0) < (row(heldout, "vote", r.n).accuracy or 0)]
    top = row(heldout, weighted, N)
    ece = "n/a" if top.ece_calibrated is None else f"{top.ece_calibrated:.3f}"
    greedy = row(heldout, "greedy", 1).accuracy or 0.0
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores · heldout {heldout.prompts} prompts, tuning {tuning.prompts}")
    print(f"greedy: heldout {100 * greedy:.1f} %, tuning {100 * (row(tuning, 'greedy', 1).accuracy or 0):.1f} %")
    print(f"(a) N={N}: plain vote {100 * (plain16.accuracy or 0):.1f} % at {plain16.tokens:.0f} tokens/prompt; "
          f"{weighted}+prune:{policy} {100 * (pruned16.accuracy or 0):.1f} % at {pruned16.tokens:.0f}: "
          f"{100 * saved:.1f} % fewer tokens (goal >= 40 %), accuracy {diff16:+.1f} points (goal >= -1)")  # fmt: skip
    print(f"(b) N=8: {weighted} {100 * (weighted8.accuracy or 0):.1f} % vs vote {100 * (plain8.accuracy or 0):.1f} %: "
          f"{diff8:+.1f} points (goal >= +2); below the plain vote at N = {below or 'none'}")  # fmt: skip
    print(f"(c) ECE of {weighted} at N={N} after the tuning temperature: {ece} (raw {top.ece or 0:.3f}; goal <= 0.05)")
    print(f"ratio: {pruned16.tokens / plain16.tokens:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="Items per split (a quick look).")
    parser.add_argument("--report", type=Path, default=None, help="Write both splits' reports as JSON.")
    parser.add_argument("--temperature", type=float, default=PARAMS.temperature, help="Sampling temperature of every arm.")
    args = parser.parse_args()
    params = PARAMS.model_copy(update={"temperature": args.temperature})
    print(f"sampling: {params.model_dump(exclude_defaults=True)}")
    tuning, heldout, weighted, policy = anyio.run(main, args.limit, params, backend="asyncio")
    if args.report is not None:
        both = {"tuning": tuning.model_dump(mode="json"), "heldout": heldout.model_dump(mode="json")}
        args.report.write_text(json.dumps(both) + "\n", encoding="utf-8")
    summarize(tuning, heldout, weighted, policy)
