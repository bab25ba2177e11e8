"""Remote overhead: the same workload through OpenAIEngine to one local vLLM
server vs VLLMEngine in-process; and two endpoints vs one.

Both engines load the embedded default model with the same settings (bf16,
eager, no chunked prefill, max_model_len 2048) and run the same prompts, n and
seeds through the Orchestrator. Rounds alternate (in-process first on odd
rounds, remote first on even ones) so drift on a shared machine hits both
alike. Throughput is generated tokens per second; the last line is the ratio
remote / in-process (goal >= 0.9).

The second figure sends the workload to two endpoints: the server directly
plus a loopback proxy to the same server (or, with ``--second-server``, a
second server). On a 2-core machine this shows the balancer's overhead and
CPU contention, not scale: both endpoints share the same cores.

    python benchmarks/remote_overhead.py [--rounds 5] [--prompts 8] [--n 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

from nbest import OpenAIEngine, Orchestrator, VLLMEngine
from nbest.engines.base import Engine
from nbest.engines.models import prepare_default_model

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "What is 17 * 3? Explain step by step.",
    "Give three tips for learning a language.",
    "Describe a cat to someone who has never seen one.",
    "Summarise the plot of a heist movie.",
    "Why do we have seasons?",
    "List some uses of a paperclip.",
]
ENGINE_ARGS: dict[str, Any] = {"max_model_len": 2048, "enforce_eager": True, "enable_chunked_prefill": False, "dtype": "bfloat16"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def vllm_server(model: str) -> Iterator[str]:
    """A vLLM OpenAI-compatible server on 127.0.0.1 in its own process group (killed on exit)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--enforce-eager", "--max-model-len", "2048", "--no-enable-chunked-prefill",
           "--dtype", "bfloat16", "--disable-log-stats"]  # fmt: skip
    log = tempfile.NamedTemporaryFile(prefix="nbest-bench-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"vLLM server exited with {proc.returncode}; log: {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"vLLM server not healthy after 600 s; log: {log.name}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class Proxy:
    """A loopback TCP proxy to ``target`` (a second endpoint on the same server)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()


async def workload(orch: Orchestrator, args: argparse.Namespace) -> tuple[float, int]:
    """Seconds and generated tokens for every prompt x n candidates."""
    started = time.perf_counter()
    results = await orch.generate_many(
        PROMPTS[: args.prompts], n=args.n, max_tokens=args.tokens, temperature=0.8, seed=1234, concurrency=args.prompts
    )
    elapsed = time.perf_counter() - started
    failed = [c.error for r in results for c in r.candidates if not c.ok]
    if failed:
        raise SystemExit(f"{len(failed)} candidates failed: {failed[0]}")
    return elapsed, sum(r.usage.completion_tokens for r in results)


async def measure(engines: dict[str, Engine], order: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Tokens per second of each engine, run in ``order``."""
    rates = {}
    for label in order:
        async with Orchestrator(engines[label], close_engines=False, max_in_flight=256) as orch:
            seconds, tokens = await workload(orch, args)
        rates[label] = tokens / seconds
    return rates


async def main(args: argparse.Namespace) -> None:
    model = str(prepare_default_model())
    local = VLLMEngine(model, **ENGINE_ARGS)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(vllm_server(model))
        proxy = Proxy(int(url.rsplit(":", 1)[1].split("/")[0]))
        second = stack.enter_context(vllm_server(model)) if args.second_server else await proxy.start()
        await local.start()
        engines: dict[str, Engine] = {
            "in-process": local,
            "remote": OpenAIEngine([url], model),
            "two endpoints": OpenAIEngine([url, second], model),
        }
        try:
            for engine in engines.values():
                await engine.start()  # type: ignore[attr-defined]
            await measure(engines, list(engines), argparse.Namespace(**{**vars(args), "prompts": 2, "n": 2}))  # warm-up
            print(f"workload: {args.prompts} prompts x n={args.n}, max_tokens={args.tokens}, temperature 0.8, fixed seeds; "
                  f"{args.rounds} alternating rounds; tokens/s")  # fmt: skip
            ratios, scale = [], []
            for i in range(args.rounds):
                order = list(engines) if i % 2 == 0 else list(reversed(engines))
                rates = await measure(engines, order, args)
                ratios.append(rates["remote"] / rates["in-process"])
                scale.append(rates["two endpoints"] / rates["remote"])
                print(f"round {i + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
                      + f"; remote/in-process {ratios[-1]:.3f}; two/one endpoints {scale[-1]:.3f}")  # fmt: skip
            what = "a second server" if args.second_server else "a loopback proxy to the same server"
            print(f"two endpoints (the server + {what}) / one: {statistics.median(scale):.3f} "
                  "(2 cores: this shows balancer overhead and contention, not scale)")  # fmt: skip
            print(f"ratio: {statistics.median(ratios):.3f}")
        finally:
            for engine in engines.values():
                await engine.aclose()
            await proxy.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--second-server", action="store_true", help="Two servers instead of a proxy to one.")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the figures
    os.environ.setdefault("TQDM_DISABLE", "1")
    asyncio.run(main(parser.parse_args()))
