"""Batch throughput: ``Orchestrator.generate_many`` vs vLLM's offline ``LLM.generate``.

The same 256 requests in both arms: 64 chat prompts x N = 4 candidates,
temperature 0.8, seeds seed + i per candidate, 64 new tokens with
``ignore_eos`` (so both arms generate exactly the same number of tokens),
sampled-token log-probabilities on, the same engine arguments (those
``VLLMEngine.default()`` uses: on CPU ``enforce_eager=True``,
``enable_chunked_prefill=False``, bfloat16, ``max_model_len=4096``).

  (a) nbest: ``generate_many(prompts, n=4, ...)`` with every prompt in progress
      at once (``concurrency=64``, ``max_in_flight=256``), each candidate its
      own engine request, then ranked (MeanLogProb);
  (b) vLLM: ``LLM.generate`` on the 256 flattened requests (n=1 each);
  (c) raw AsyncLLM: the 256 flattened requests sent straight to vLLM's
      ``AsyncLLM`` (the engine nbest drives) with ``asyncio.gather``, no nbest.

(a)/(c) is what nbest costs over the engine it drives; (c)/(b) is what vLLM's
async front end costs against its offline loop.

Each arm runs in its own process, after a short warm-up, so each process's
peak RSS is its own; engine start-up is not timed. With ``--rounds 2`` (the
default) the arms run in mirrored order (vLLM, AsyncLLM, nbest, then nbest,
AsyncLLM, vLLM) so a machine whose load drifts favours none. The last line is
the ratio of the arms' total throughputs a/b (goal >= 0.95).

    python benchmarks/batch_throughput.py [--prompts 64] [--n 4] [--tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

from arms import run_arm

PROMPT = "Write a short note about the number {i} and why someone might like it."
TEMPERATURE = 0.8
SEED = 1234


def _rss() -> dict[str, float]:
    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "engine_rss_mib": sum(p.memory_info().rss for p in children if p.is_running()) / 2**20,
    }


def run_nbest(prompts: int, n: int, tokens: int) -> dict[str, Any]:
    import anyio

    from nbest import Orchestrator, VLLMEngine

    texts = [PROMPT.format(i=i) for i in range(prompts)]

    async def main() -> dict[str, Any]:
        async with Orchestrator(VLLMEngine.default(), max_in_flight=prompts * n) as orch:
            await orch.generate_many(texts[:2], n=n, temperature=TEMPERATURE, max_tokens=8, seed=SEED)  # warm-up
            started = time.perf_counter()
            results = await orch.generate_many(
                texts, n=n, concurrency=prompts, temperature=TEMPERATURE, max_tokens=tokens, seed=SEED, ignore_eos=True
            )
            seconds = time.perf_counter() - started
            failed = sum(len(r.failed) for r in results)
            generated = sum(r.usage.completion_tokens for r in results)
            return {"seconds": seconds, "tokens": generated, "candidates": sum(len(r.candidates) for r in results),
                    "failed": failed, **_rss()}  # fmt: skip

    return anyio.run(main, backend="asyncio")


def _engine_args() -> dict[str, Any]:
    from vllm.platforms import current_platform

    from nbest.engines.cpu import cpu_engine_defaults, cpu_environment
    from nbest.engines.models import resolve_model

    args: dict[str, Any] = {"model": resolve_model(None), "max_model_len": 4096, "disable_log_stats": True}
    if current_platform.is_cpu():
        args.update(cpu_engine_defaults())
        for name, value in cpu_environment(args).items():  # the threads and KV cache nbest's engine gets
            os.environ.setdefault(name, value)
    return args


def _flat_requests(tok: Any, prompts: int, n: int, tokens: int) -> tuple[list[dict[str, Any]], list[Any], list[Any]]:
    """The flattened requests, their sampling params and warm-up params."""
    from vllm import SamplingParams

    chats = [[{"role": "user", "content": PROMPT.format(i=i)}] for i in range(prompts)]
    # rendered as VLLMEngine.render does: the chat template, then token ids without extra special tokens
    rendered = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    ids = [tok.encode(text, add_special_tokens=False) for text in rendered]
    flat = [{"prompt_token_ids": ids[p]} for p in range(prompts) for _ in range(n)]
    params = [
        SamplingParams(n=1, temperature=TEMPERATURE, seed=SEED + j, max_tokens=tokens, ignore_eos=True, logprobs=0)
        for _ in range(prompts)
        for j in range(n)
    ]
    warm = [SamplingParams(n=1, temperature=TEMPERATURE, seed=SEED + j, max_tokens=8, logprobs=0) for j in range(2 * n)]
    return flat, params, warm


def run_vllm(prompts: int, n: int, tokens: int) -> dict[str, Any]:
    from vllm import LLM

    llm = LLM(**_engine_args())
    flat, params, warm = _flat_requests(llm.get_tokenizer(), prompts, n, tokens)
    llm.generate(flat[: 2 * n], warm, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.generate(flat, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"seconds": seconds, "tokens": generated, "candidates": len(outputs), "failed": 0, **_rss()}


def run_asyncllm(prompts: int, n: int, tokens: int) -> dict[str, Any]:
    import asyncio

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    async def main() -> dict[str, Any]:
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**_engine_args()))
        try:
            flat, params, warm = _flat_requests(llm.get_tokenizer(), prompts, n, tokens)
            for p in (*params, *warm):
                p.output_kind = RequestOutputKind.FINAL_ONLY  # as VLLMEngine asks (no token streaming)

            async def one(prompt: dict[str, Any], sp: Any, rid: str) -> int:
                final = None
                async for out in llm.generate(prompt, sp, request_id=rid):
                    final = out
                assert final is not None
                return len(final.outputs[0].token_ids)

            await asyncio.gather(*(one(flat[i], warm[i], f"warm-{i}") for i in range(len(warm))))
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(flat[i], params[i], f"req-{i}") for i in range(len(flat))))
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "tokens": sum(counts), "candidates": len(counts), "failed": 0, **_rss()}
        finally:
            llm.shutdown()

    return asyncio.run(main())


def _arm(name: str, argv: list[str]) -> dict[str, Any]:
    return run_arm(__file__, ["--arm", name, *argv], {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds; the arms alternate (ABBA) [default: 2].")
    parser.add_argument("--arm", choices=["nbest", "vllm", "asyncllm"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm is not None:
        run = {"nbest": run_nbest, "vllm": run_vllm, "asyncllm": run_asyncllm}[args.arm]
        print(json.dumps(run(args.prompts, args.n, args.tokens)), flush=True)
        return
    argv = ["--prompts", str(args.prompts), "--n", str(args.n), "--tokens", str(args.tokens)]
    print(f"batch throughput: {args.prompts} prompts x N={args.n}, {args.tokens} tokens each (ignore_eos), "
          f"temperature {TEMPERATURE}, seeded; one process per arm and round", flush=True)  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"vllm": [], "asyncllm": [], "nbest": []}
    labels = {"vllm": "vLLM LLM.generate", "asyncllm": "raw AsyncLLM", "nbest": "nbest generate_many"}
    for r in range(args.rounds):
        for name in ("vllm", "asyncllm", "nbest") if r % 2 == 0 else ("nbest", "asyncllm", "vllm"):
            arm = _arm(name, argv)
            runs[name].append(arm)
            label = labels[name]
            print(
                f"  {label:20s} {arm['candidates']:4d} candidates  {arm['tokens']:6d} tokens  {arm['seconds']:7.2f} s  "
                f"{arm['tokens'] / arm['seconds']:7.1f} tokens/s  {arm['candidates'] / arm['seconds']:6.2f} candidates/s  "
                f"peak RSS {arm['peak_rss_mib']:.0f} MiB (+ engine processes {arm['engine_rss_mib']:.0f} MiB)",
                flush=True,
            )
    nbest = runs["nbest"]
    tokens = {name: sum(a["tokens"] for a in arms) for name, arms in runs.items()}
    seconds = {name: sum(a["seconds"] for a in arms) for name, arms in runs.items()}
    if tokens["nbest"] != tokens["vllm"] or any(a["failed"] for a in nbest):
        print(f"  warning: token counts differ ({tokens['nbest']} vs {tokens['vllm']}) or candidates failed")
    peak = {name: max(a["peak_rss_mib"] for a in arms) for name, arms in runs.items()}
    print(f"  peak RSS of the nbest process {peak['nbest']:.0f} MiB vs the vLLM offline process {peak['vllm']:.0f} MiB "
          f"({peak['nbest'] / peak['vllm']:.2f}x)")  # fmt: skip
    speed = {name: tokens[name] / seconds[name] for name in runs}
    print(f"  nbest / raw AsyncLLM {speed['nbest'] / speed['asyncllm']:.3f}   "
          f"raw AsyncLLM / LLM.generate {speed['asyncllm'] / speed['vllm']:.3f}")  # fmt: skip
    ratio = speed["nbest"] / speed["vllm"]
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
