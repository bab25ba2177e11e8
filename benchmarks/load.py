"""Load: many OpenAI clients against ``nbest serve`` for minutes, mixed with hostile requests.

Starts ``nbest serve`` on the embedded default model as a subprocess on
127.0.0.1 (a free port, a fresh preference database), waits until ``/healthz``
says it can serve, then for ``--seconds`` runs ``--clients`` clients in a loop,
each with the official ``openai`` client (no retries): a chat completion with
``n=4`` and a few tokens. Beside them one client sends hostile requests in a
loop: oversized bodies, bad JSON, huge ``n`` and ``max_tokens``, unknown or
forbidden rerankers, a config file named by a client, deep nesting, huge
integers, NaN, a foreign ``Host``, a wrong content type, a huge grid...

It reports the requests served, the errors other than 429 (goal 0), p50/p99
latency of the served ones, how the hostile requests were answered (goal: no
5xx, no timeout), and the resident memory of the server process (and of the
engine processes it started) sampled every few seconds after a warm-up
(goal: flat). The last line is ``ratio: served / attempted`` over the normal
requests (goal 1.0). The server is stopped at the end, its engine processes
with it.

    python benchmarks/load.py [--seconds 150] [--clients 8] [--n 4] [--tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil

PROMPTS = [
    "What is 17 * 3?",
    "Name a colour of the sky.",
    "Write one word about the sea.",
    "Say hello in French.",
    "What is the capital of Italy?",
    "Give a number between 1 and 10.",
]


@dataclass(frozen=True)
class Hostile:
    """One hostile request: a name, the path, the raw body and extra headers."""

    name: str
    body: bytes
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)


def hostile_requests(model: str) -> list[Hostile]:
    """Each request is well formed but for one field (``model`` is the served one)."""

    def chat(**fields: object) -> bytes:
        return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}).encode()

    def native(**fields: object) -> bytes:
        return json.dumps({"prompt": "hi", "n": 2, "max_tokens": 4, **fields}).encode()

    grid = {"kind": "grid", "temperature": [round(0.01 * i, 2) for i in range(1, 101)],
            "top_p": [round(0.01 * i, 2) for i in range(1, 101)], "top_k": list(range(1, 101)),
            "min_p": [round(0.01 * i, 2) for i in range(100)], "fill": "sample"}  # fmt: skip
    return [
        Hostile("body of 2 MB", chat(messages=[{"role": "user", "content": "x" * 2_000_000}])),
        Hostile("malformed JSON", b'{"messages": ['),
        Hostile("JSON array", b"[1, 2, 3]"),
        Hostile("n = 100000", chat(n=100_000)),
        Hostile("max_tokens = 10^9", chat(max_tokens=10**9)),
        Hostile("prompt of 200,000 characters", chat(messages=[{"role": "user", "content": "y" * 200_000}])),
        Hostile("unknown reranker", native(rerankers=["nope"]), "/v1/nbest"),
        Hostile("judge reranker", native(rerankers=["judge"]), "/v1/nbest"),
        Hostile("client regex", native(rerankers=["vote:regex:(.|.)*\x00"]), "/v1/nbest"),
        Hostile("config file by name", native(strategy="@/etc/passwd"), "/v1/nbest"),
        Hostile("grid of 10^8 combinations", native(n=1, strategy=grid), "/v1/nbest"),
        Hostile("nested 100,000 deep", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        Hostile("integer of 5,000 digits", chat(n=1)[:-1] + b', "seed": ' + b"9" * 5_000 + b"}"),
        Hostile("NaN temperature", chat()[:-1] + b', "temperature": NaN}'),
        Hostile("empty messages", chat(messages=[])),
        Hostile("foreign Host header", chat(), headers={"host": "evil.example"}),
        Hostile("form post", b"prompt=hi", "/v1/nbest", headers={"content-type": "application/x-www-form-urlencoded"}),
        Hostile("choice for an unknown result", json.dumps({"result_id": "nope", "chosen": 0}).encode(), "/v1/choices"),
    ]


@dataclass
class Tally:
    """What the normal clients and the hostile client saw."""

    attempted: int = 0
    served: int = 0
    too_many: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    hostile_sent: int = 0
    hostile: Counter[str] = field(default_factory=Counter)
    hostile_failures: Counter[str] = field(default_factory=Counter)
    hostile_slowest: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss(proc: psutil.Process) -> tuple[int, int]:
    """Resident bytes of the server process, and of it with every process under it."""
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return own, total


@contextlib.contextmanager
def nbest_server(folder: Path, extra: list[str]) -> Iterator[tuple[str, psutil.Process]]:
    """``nbest serve`` on the embedded model in its own process group (``extra``: more of its
    options); stopped with its engine processes on exit."""
    port = _free_port()
    cmd = [sys.executable, "-m", "nbest.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--db", str(folder / "preferences.db"), *extra]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = psutil.Process(proc.pid)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"nbest serve exited with {proc.returncode}; log: {log_path}")
            started |= {c.pid for c in server.children(recursive=True)}
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"nbest serve not healthy after 900 s; log: {log_path}")
            time.sleep(1)
        started |= {c.pid for c in server.children(recursive=True)}
        yield f"http://127.0.0.1:{port}", server
    finally:
        with contextlib.suppress(psutil.Error):
            started |= {c.pid for c in server.children(recursive=True)}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in started:  # engine processes this server started, should any outlive it
            with contextlib.suppress(psutil.Error):
                leftover = psutil.Process(pid)
                leftover.wait(timeout=10)
            with contextlib.suppress(psutil.Error, OSError):
                os.kill(pid, signal.SIGKILL)


async def normal_client(base: str, model: str, args: argparse.Namespace, stop_at: float, tally: Tally, seed: int) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600)
    i = seed
    try:
        while time.monotonic() < stop_at:
            i += 1
            tally.attempted += 1
            started = time.monotonic()
            try:
                reply = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    n=args.n, max_tokens=args.tokens, temperature=0.8, seed=i,
                )  # fmt: skip
            except openai.RateLimitError:
                tally.too_many += 1
                await asyncio.sleep(1)
                continue
            except openai.APIStatusError as exc:
                tally.errors[f"{exc.status_code} {str(exc)[:80]}"] += 1
                continue
            except openai.APIError as exc:
                tally.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                continue
            if len(reply.choices) != args.n:
                tally.errors[f"{len(reply.choices)} choices instead of {args.n}"] += 1
                continue
            tally.served += 1
            tally.latencies.append(time.monotonic() - started)
    finally:
        await client.close()


async def hostile_client(base: str, model: str, stop_at: float, tally: Tally, pause: float) -> None:
    requests = hostile_requests(model)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        i = 0
        while time.monotonic() < stop_at:
            case = requests[i % len(requests)]
            i += 1
            headers = {"content-type": "application/json", **case.headers}
            started = time.monotonic()
            tally.hostile_sent += 1
            try:
                r = await client.post(case.path, content=case.body, headers=headers)
            except httpx.HTTPError as exc:
                tally.hostile_failures[f"{case.name}: {type(exc).__name__}"] += 1
            else:
                tally.hostile[f"{case.name}: {r.status_code}"] += 1
                if r.status_code >= 500:
                    tally.hostile_failures[f"{case.name}: {r.status_code} {r.text[:80]}"] += 1
            tally.hostile_slowest = max(tally.hostile_slowest, time.monotonic() - started)
            await asyncio.sleep(pause)


async def sample_memory(server: psutil.Process, stop_at: float, every: float, samples: list[tuple[float, int, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < stop_at:
        with contextlib.suppress(psutil.Error):
            samples.append((time.monotonic() - start, *_rss(server)))
        await asyncio.sleep(every)


async def run(base: str, server: psutil.Process, args: argparse.Namespace) -> tuple[Tally, list[tuple[float, int, int]], int]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        for i in range(2):  # warm-up: first requests compile and fill caches
            messages = [{"role": "user", "content": PROMPTS[i]}]
            body = {"model": model, "n": args.n, "max_tokens": args.tokens, "seed": i, "messages": messages}
            (await http.post("/v1/chat/completions", json=body)).raise_for_status()
        tally = Tally()
        samples: list[tuple[float, int, int]] = []
        stop_at = time.monotonic() + args.seconds
        await asyncio.gather(
            sample_memory(server, stop_at, args.sample_every, samples),
            hostile_client(base, model, stop_at, tally, args.hostile_pause),
            *(normal_client(base, model, args, stop_at, tally, seed=1000 * c) for c in range(args.clients)),
        )
        samples.append((args.seconds, *_rss(server)))
        health = (await http.get("/healthz")).status_code
    return tally, samples, health


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="nbest-load-") as tmp, nbest_server(Path(tmp), args.server_arg) as (base, server):
        print(f"nbest serve at {base} (pid {server.pid}); {args.clients} clients, n={args.n}, max_tokens={args.tokens}, "
              f"{args.seconds:.0f} s; CPU: {_cpu()}, {os.cpu_count()} cores; serve options: {args.server_arg}",
              flush=True)  # fmt: skip
        load_before = os.getloadavg()[0]
        tally, samples, health = asyncio.run(run(base, server, args))
        load_after = os.getloadavg()[0]
    mb = 1024 * 1024
    after_warmup = [s for s in samples if s[0] >= args.warmup] or samples
    first, last = after_warmup[0], samples[-1]
    print(f"normal requests: {tally.attempted} attempted, {tally.served} served, {tally.too_many} answered 429, "
          f"{sum(tally.errors.values())} other errors (goal 0)")  # fmt: skip
    for what, count in tally.errors.most_common(5):
        print(f"  error x{count}: {what}")
    if tally.latencies:
        print(f"latency of served requests: p50 {statistics.median(tally.latencies):.2f} s, "
              f"p99 {_percentile(tally.latencies, 0.99):.2f} s, max {max(tally.latencies):.2f} s; "
              f"{tally.served * args.n / args.seconds:.1f} candidates/s")  # fmt: skip
    print(f"hostile requests: {tally.hostile_sent} sent, {sum(tally.hostile_failures.values())} answered 5xx or failed (goal 0), "
          f"slowest answer {tally.hostile_slowest:.2f} s")  # fmt: skip
    by_kind: dict[str, Counter[str]] = {}
    for key, count in tally.hostile.items():
        name, status = key.rsplit(": ", 1)
        by_kind.setdefault(name, Counter())[status] += count
    for name, statuses in by_kind.items():
        print(f"  {name:<32} " + ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items())))
    for what, count in tally.hostile_failures.most_common(5):
        print(f"  failure x{count}: {what}")
    print(f"server RSS after {first[0]:.0f} s: {first[1] / mb:.0f} MB -> {last[1] / mb:.0f} MB at the end "
          f"({(last[1] - first[1]) / mb:+.0f} MB, {100 * (last[1] - first[1]) / first[1]:+.1f}%); with its engine processes "
          f"{first[2] / mb:.0f} MB -> {last[2] / mb:.0f} MB ({100 * (last[2] - first[2]) / first[2]:+.1f}%)")  # fmt: skip
    if tally.served:
        print(f"server RSS growth per 100 served requests after the warm-up: "
              f"{100 * (last[1] - first[1]) / mb / max(1, tally.served):+.2f} MB (Results kept for /v1/choices are "
              f"bounded by --remember-bytes)")  # fmt: skip
    step = max(1, len(samples) // 8)
    print("server RSS over time (s: MB): " + ", ".join(f"{t:.0f}: {own / mb:.0f}" for t, own, _ in samples[::step]))
    print(f"/healthz after the run: {health}; machine load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"ratio: {tally.served / tally.attempted if tally.attempted else 0.0:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150, help="How long the clients run.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent normal clients.")
    parser.add_argument("--n", type=int, default=4, help="Candidates per request.")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens per candidate.")
    parser.add_argument("--hostile-pause", type=float, default=0.25, help="Seconds between two hostile requests.")
    parser.add_argument("--warmup", type=float, default=20, help="Seconds of load before the RSS baseline.")
    parser.add_argument("--sample-every", type=float, default=5, help="Seconds between two RSS samples.")
    parser.add_argument("--server-arg", action="append", default=[], help="An option for nbest serve (repeatable), "
                        "e.g. --server-arg=--remember-bytes=2000000.")  # fmt: skip
    main(parser.parse_args())
