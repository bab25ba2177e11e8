"""The cost of the Ray layer: ``nbest batch`` vs ``nbest batch --ray --replicas 1``, and the driver's ceiling.

(a) The same input file through both commands on this machine, one process per
    arm: 64 chat prompts x N = 4 candidates, temperature 0.8, seed 1234 (candidate
    i gets seed + i), 32 new tokens with ``ignore_eos`` (every arm generates the
    same tokens), the embedded model, ``--concurrency 16``. Both write OUT the
    same way (append + fsync per Result). The throughput of an arm is the
    completion tokens in OUT over the time the command reports for writing
    them (``N prompt(s) written to OUT in X s``: from the first request sent,
    once the engine, or every replica, is ready), so neither vLLM's start-up
    nor Ray's (cluster, actor, engine in the actor) is counted; the whole
    command's wall time is printed beside it. With ``--rounds 2`` (the default)
    the arms run in mirrored order (plain, Ray, Ray, plain).

(b) The driver's ceiling: the driver of ``--ray`` (:class:`ReplicaPool` feeding
    replicas, each Result appended to an output file with fsync, as ``nbest
    batch`` writes it) over replicas whose engine answers instantly (a scripted
    engine, 4 candidates of 5 tokens per prompt): prompts per second, and the
    driver process's CPU time per prompt (its Ray threads included). On a
    machine of 2 cores the replicas share the CPU with the driver, so the
    measured rate is a floor; the CPU time per prompt is what limits the driver
    when replicas run elsewhere.

The last line is ``ratio: X``, the total throughput of the Ray arms over the
plain arms (goal >= 0.9 on one machine).

    python benchmarks/ray_batch.py [--prompts 64] [--n 4] [--tokens 32] [--rounds 2] [--driver-prompts 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "Write a short note about the number {i} and why someone might like it."
TEMPERATURE = 0.8
SEED = 1234
NBEST = [sys.executable, "-m", "nbest.cli"]


def _lines(prompts: int, tokens: int) -> list[str]:
    return [
        json.dumps({"id": f"p{i}", "prompt": PROMPT.format(i=i), "max_tokens": tokens, "ignore_eos": True})
        for i in range(prompts)
    ]


def run_arm(ray: bool, prompts: int, n: int, tokens: int, folder: Path) -> dict[str, Any]:
    """One ``nbest batch`` command (with ``--ray --replicas 1`` when ``ray``), timed."""
    source = folder / "in.jsonl"
    out = folder / f"out-{'ray' if ray else 'plain'}-{time.monotonic_ns()}.jsonl"
    source.write_text("\n".join(_lines(prompts, tokens)) + "\n", encoding="utf-8")
    argv = [*NBEST, "batch", str(source), "-o", str(out), "-n", str(n), "--seed", str(SEED),
            "-t", str(TEMPERATURE), "--concurrency", "16", "--max-in-flight", "64"]  # fmt: skip
    if ray:
        argv += ["--ray", "--replicas", "1"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    reported = re.search(r"(\d+) prompt\(s\) written to .* in ([0-9.]+) s", done.stderr)
    assert reported is not None, done.stderr[-2000:]
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(results) == prompts == int(reported[1]), (len(results), reported[0])
    tokens = sum(r["usage"]["completion_tokens"] for r in results)
    seconds = float(reported[2])
    texts = {(r["id"], c["index"]): c["text"] for r in results for c in r["candidates"]}
    return {"ray": ray, "wall_s": wall, "seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds, "texts": texts}


def instant(spec: object = None) -> Any:
    """A replica's engine that answers every candidate at once (5 tokens)."""
    from nbest.engines.base import Engine
    from nbest.types import CandidateUpdate, Prompt, SamplingParams

    class Instant:
        name = "instant"

        async def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> Any:
            yield CandidateUpdate(text=f"answer {params.seed}", num_tokens=5, prompt_tokens=3, cumulative_logprob=-5.0,
                                  token_logprobs=[-1.0] * 5, finish_reason="stop", finished=True)  # fmt: skip

        async def abort(self, request_id: str) -> None:
            return None

        async def aclose(self) -> None:
            return None

    engine = Instant()
    assert isinstance(engine, Engine)
    return {"default": engine}


def driver_ceiling(prompts: int, n: int, replicas: int, concurrency: int) -> dict[str, Any]:
    """Prompts per second through ReplicaPool and an output log, on instant replicas."""
    import anyio

    from nbest.batch.output import open_output
    from nbest.batch.runner import write_results
    from nbest.distributed import RayOptions, ReplicaPool, ReplicaSpec, ray_cluster
    from nbest.types import Request, SamplingParams

    requests = [Request(id=f"d{i}", prompt=f"question {i}", n=n, params=SamplingParams(seed=i)) for i in range(prompts)]
    spec = ReplicaSpec(engine_factory=f"{Path(__file__).stem}:instant", concurrency=concurrency)
    figures: dict[str, Any] = {}

    async def main(out: Path) -> None:
        log, _ = open_output(out)
        with log:
            async with ReplicaPool(spec, RayOptions(replicas=replicas, replica_cpus=0.5)) as pool:
                warm = pool.as_completed(requests[:64])
                async for _ in warm:
                    pass
                cpu, started = time.process_time(), time.perf_counter()
                await write_results(pool.as_completed(requests[64:]), log, total=len(requests) - 64)  # as nbest batch does
                figures["seconds"] = time.perf_counter() - started
                figures["cpu_s"] = time.process_time() - cpu
        figures["prompts"] = len(requests) - 64

    with tempfile.TemporaryDirectory() as folder, ray_cluster(None):
        anyio.run(main, Path(folder) / "out.jsonl", backend="asyncio")
    figures["prompts_s"] = figures["prompts"] / figures["seconds"]
    figures["cpu_ms_per_prompt"] = 1000 * figures["cpu_s"] / figures["prompts"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--driver-prompts", type=int, default=2000)
    parser.add_argument("--skip-engine", action="store_true", help="Only the driver's ceiling.")
    args = parser.parse_args()

    print(f"(b) driver ceiling: {args.driver_prompts} prompts x N = {args.n} on instant scripted replicas", flush=True)
    for replicas in (1, 2):
        d = driver_ceiling(args.driver_prompts + 64, args.n, replicas, concurrency=32)
        print(f"  {replicas} replica(s): {d['prompts_s']:.0f} prompts/s, driver CPU {d['cpu_ms_per_prompt']:.2f} ms/prompt "
              f"({d['prompts']} prompts in {d['seconds']:.1f} s)", flush=True)  # fmt: skip
    if args.skip_engine:
        return

    print(f"(a) {args.prompts} prompts x N = {args.n}, {args.tokens} tokens each (ignore_eos), seed {SEED}", flush=True)
    order = [False, True] + [True, False] * (args.rounds - 1) if args.rounds > 1 else [False, True]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for ray in order:
            run = run_arm(ray, args.prompts, args.n, args.tokens, Path(folder))
            runs.append(run)
            name = "nbest batch --ray --replicas 1" if ray else "nbest batch"
            print(f"  {name:32s} {run['tok_s']:7.1f} tokens/s ({run['tokens']} tokens in {run['seconds']:.1f} s); "
                  f"whole command {run['wall_s']:.1f} s", flush=True)  # fmt: skip
    plain = [r for r in runs if not r["ray"]]
    ray_runs = [r for r in runs if r["ray"]]
    first = plain[0]["texts"]
    for run in runs[1:]:
        same = sum(run["texts"].get(key) == text for key, text in first.items())
        print(f"  candidates identical to the first plain run's: {same} of {len(first)} ({'Ray' if run['ray'] else 'plain'})")
    plain_rate = sum(r["tokens"] for r in plain) / sum(r["seconds"] for r in plain)
    ray_rate = sum(r["tokens"] for r in ray_runs) / sum(r["seconds"] for r in ray_runs)
    walls = [r["wall_s"] for r in ray_runs], [r["wall_s"] for r in plain]
    print(f"  whole command, median: Ray {statistics.median(walls[0]):.1f} s, plain {statistics.median(walls[1]):.1f} s")
    print(f"  throughput: plain {plain_rate:.1f} tokens/s, Ray {ray_rate:.1f} tokens/s")
    print(f"ratio: {ray_rate / plain_rate:.3f}")


if __name__ == "__main__":
    main()
