"""Engine sharing: two local engines of one orchestrator on this CPU, each on all cores vs a share each.

Two ``VLLMEngine.default()`` engines (the embedded model twice, routes ``a`` and
``b``) in one ``Orchestrator``; 8 candidates x 64 new tokens (``ignore_eos``),
temperature 0.8, top_p 0.95, seeds seed + i, in two workloads:

  both busy   candidates alternate between ``a`` and ``b`` (4 each): what a
              routed N-best list (``Route``) sends;
  one busy    all 8 on ``a`` while ``b`` idles.

Arms, each in its own process (two engine starts, a warm-up, then the median
tokens/s of ``--rounds`` rounds):

  all cores   ``VLLM_CPU_OMP_THREADS_BIND`` set to every physical core for both
              engines (what nbest did before it shared the cores; on a small CPU
              nbest's binding for a single engine);
  nbest       nothing set: the orchestrator gives each engine a block of the
              physical cores (``VLLMEngine.share_cpu``, ``cpu_environment``).

The last line is nbest / all cores with both engines busy; the line above it
the same with one busy (what the share costs an engine while the other idles).

    python benchmarks/engine_sharing.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from arms import run_arm

N = 8
TOKENS = 64
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def measure(rounds: int) -> dict[str, Any]:
    import anyio

    from nbest import Orchestrator, VLLMEngine
    from nbest.types import CandidateSpec, Request, SamplingParams

    class Alternate:
        """Seeded top-p candidates, candidate i on ``routes[i % len(routes)]``."""

        def __init__(self, routes: list[str]) -> None:
            self.routes = routes

        def plan(self, request: Request) -> list[CandidateSpec]:
            seed = request.params.seed or 0
            return [
                CandidateSpec(
                    index=i,
                    params=request.params.model_copy(update={"seed": seed + i}),
                    strategy="alternate",
                    engine=self.routes[i % len(self.routes)],
                )
                for i in range(request.n)
            ]

    async def main() -> dict[str, Any]:
        engines = {"a": VLLMEngine.default(), "b": VLLMEngine.default()}
        out: dict[str, Any] = {}
        async with Orchestrator(engines) as orch:
            out["bind"] = {route: e.started_env.get("VLLM_CPU_OMP_THREADS_BIND", "auto") for route, e in engines.items()}
            out["start_s"] = {route: engine.start_s for route, engine in engines.items()}
            for label, routes in (("both", ["a", "b"]), ("one", ["a"])):

                async def once(seed: int, routes: list[str] = routes) -> float:
                    params = SamplingParams(temperature=0.8, top_p=0.95, seed=seed, max_tokens=TOKENS, ignore_eos=True)
                    t0 = time.perf_counter()
                    result = await orch.run(Request(prompt=PROMPT, n=N, params=params), strategy=Alternate(routes))
                    seconds = time.perf_counter() - t0
                    assert not result.failed, result.failed
                    return result.usage.completion_tokens / seconds

                await once(10_000)  # warm-up
                speeds = [await once(1234 + 100 * r) for r in range(rounds)]
                out[label] = {"tok_s": statistics.median(speeds), "rounds": speeds}
        return out

    return anyio.run(main)


def _arm(bind: str | None, rounds: int) -> dict[str, Any]:
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "VLLM_CPU_OMP_THREADS_BIND": bind}
    return run_arm(__file__, ["--arm", "--rounds", str(rounds)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Timed rounds per workload; the median counts [default: 3].")
    parser.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(measure(args.rounds)), flush=True)
        return

    from nbest.engines.cpu import read_cpu_info

    info = read_cpu_info()
    if not info.core_ids:
        raise SystemExit("engine sharing: this machine's physical cores are unknown (no sysfs topology)")
    every = ",".join(map(str, info.core_ids))
    print(f"engine sharing: {info.model}, {len(info.core_ids)} physical cores ({every}), {info.isa}; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"workload: 2 engines (the embedded model twice), {N} candidates x {TOKENS} tokens, seeded top-p; "
          f"median of {args.rounds} rounds", flush=True)  # fmt: skip
    arms = {"all cores": _arm(every, args.rounds), "nbest": _arm(None, args.rounds)}
    for label, arm in arms.items():
        both, one = arm["both"], arm["one"]
        print(f"  {label:10s} both busy {both['tok_s']:6.1f} tok/s ({min(both['rounds']):.1f}-{max(both['rounds']):.1f})  "
              f"one busy {one['tok_s']:6.1f} tok/s ({min(one['rounds']):.1f}-{max(one['rounds']):.1f})  "
              f"bind {arm['bind']}", flush=True)  # fmt: skip
    all_cores, nbest = arms["all cores"], arms["nbest"]
    print(f"  one busy: nbest / all cores {nbest['one']['tok_s'] / all_cores['one']['tok_s']:.3f}")
    print(f"ratio: {nbest['both']['tok_s'] / all_cores['both']['tok_s']:.3f}")


if __name__ == "__main__":
    main()
