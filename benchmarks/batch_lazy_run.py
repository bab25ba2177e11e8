"""``nbest batch`` over a lazy 50,000-line input: peak memory and lines/s of the whole run.

The command runs in this process (``nbest.cli.main`` with an engine factory) on
an engine that answers every candidate at once and keeps nothing, so what is
measured is nbest's own work: the first pass (every line checked, ids kept as
fingerprints), the second (lines parsed again as prompt slots free up, run,
ranked, appended to OUT). Two arms, each in a fresh subprocess so one's caches
do not flatter the other:

  (a) timed: wall time of the command, lines/s, and lines per CPU second of
      the process (steadier than wall time on a machine others load);
  (b) traced: the same command under ``tracemalloc``, its peak (Python
      allocations; slower, so not timed), and the process's peak RSS.

A run whose memory grew with the number of lines would peak at tens of MiB here
(holding the 50,000 Requests alone takes about 58 MiB); a bounded one stays at
a few MiB.

    python benchmarks/batch_lazy_run.py [--lines 50000] [--concurrency 8] [-n 2]

Measured (Intel Xeon, 2 cores, AVX-512 + AMX, shared with other engines: load
average 6-44, so wall times are noisy) when the batch runner's own worker pool
gave way to ``Orchestrator.as_completed`` over the lazy input (each request then
also checked as it is taken): peak 8.15 -> 8.11 MiB of Python allocations over
the whole 50,000-line run, peak RSS 66 -> 66 MiB; 579, 486, 471 -> 516, 454,
443 lines/s; 732, 720 -> 689, 676 lines per CPU second (10,000 lines, runs
interleaved: 760, 768, 741, 739 -> 687, 696, 691, 710; about 2 points of that
the per-request check, 712 and 714 without it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine
from nbest.types import CandidateUpdate, Prompt, SamplingParams


class InstantEngine:
    """Answers every candidate at once with ``answer <seed>`` (5 tokens) and keeps
    no record of it, so the engine adds nothing to the memory measured."""

    name = "instant"

    async def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]:
        yield CandidateUpdate(
            text=f"answer {params.seed}",
            num_tokens=5,
            prompt_tokens=3,
            cumulative_logprob=-5.0,
            token_logprobs=[-1.0] * 5,
            finish_reason="stop",
            finished=True,
        )

    async def abort(self, request_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def instant(options: EngineOptions) -> dict[str, Engine]:
    return {"default": InstantEngine()}


def one_run(lines: int, concurrency: int, n: int, traced: bool) -> dict[str, float]:
    """Run ``nbest batch`` once over a fresh input of ``lines`` lines; its figures."""
    import tracemalloc

    from nbest.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        argv = ["batch", str(inp), "-o", str(out), "-n", str(n), "--concurrency", str(concurrency), "--seed", "1"]
        inp.write_bytes(b'{"id":"warm","prompt":"x"}\n' * 1)
        main(argv, engine_factory=instant)  # imports and first-call caches are not the run's
        out.unlink()
        inp.write_bytes(b"".join(b'{"id":"q%d","prompt":"What is %d + %d?"}\n' % (i, i, i) for i in range(lines)))
        if traced:
            tracemalloc.start()
        started, cpu_started = time.perf_counter(), time.process_time()
        main(argv, engine_factory=instant)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        tracemalloc.stop()
        with out.open("rb") as f:
            written = sum(1 for _ in f)
    assert written == lines, (written, lines)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "elapsed_s": elapsed,
        "lines_per_s": lines / elapsed,
        "lines_per_cpu_s": lines / cpu,
        "traced_peak_mib": peak / 2**20,
        "max_rss_mib": rss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-n", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs (the median is reported)")
    parser.add_argument("--traced", action=argparse.BooleanOptionalAction, default=True, help="also run the traced arm")
    parser.add_argument("--child", choices=["timed", "traced"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = one_run(args.lines, args.concurrency, args.n, traced=args.child == "traced")
        print(json.dumps(figures))
        return

    def child(kind: str) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--child", kind, "--lines", str(args.lines), "--concurrency", str(args.concurrency)]
        done = subprocess.run([*cmd, "-n", str(args.n)], check=True, capture_output=True, text=True, env=os.environ)
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    timed = sorted((child("timed") for _ in range(args.rounds)), key=lambda f: f["lines_per_s"])
    median = timed[len(timed) // 2]
    traced = child("traced") if args.traced else None
    print(f"lines {args.lines}, n {args.n}, concurrency {args.concurrency}, load average {os.getloadavg()[0]:.2f}")
    rates = ", ".join(f"{f['lines_per_s']:.0f}" for f in timed)
    cpu_rates = ", ".join(f"{f['lines_per_cpu_s']:.0f}" for f in timed)
    print(f"timed:  {rates} lines/s (median {median['lines_per_s']:.0f}); peak RSS {median['max_rss_mib']:.0f} MiB")
    print(f"        {cpu_rates} lines per CPU second of the process (less sensitive to a shared machine's load)")
    if traced is not None:
        print(f"traced: peak {traced['traced_peak_mib']:.2f} MiB of Python allocations over the whole run")


if __name__ == "__main__":
    main()
