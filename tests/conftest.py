"""Shared fixtures: a scripted engine for unit tests, one real vLLM engine per session,
one real vLLM OpenAI-compatible server per session."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest
import pytest_asyncio

from nbest import VLLMEngine
from nbest.engines.models import prepare_default_model
from nbest.rerankers.embedding import Embedder
from tests.scripted import ScriptedEngine

# Plugin modules register their kinds when imported: only the plugin tests import them
# (through entry points), never the collection of doctests.
collect_ignore = ["plugins", "plugin_engine.py"]

# The embedded model is small: 1 GiB of KV cache holds ~45k tokens, and keeps
# several engines (the in-process one, vllm serve processes) within memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# serve, batch and eval compile the model once torch's compile cache holds it: the tests' engines
# start from a compile cache of their own, cold as on a fresh machine (so they run eager, whatever
# this machine compiled before), removed when the session ends.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="nbest-tests-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)

# A shell starts a background job (`make test &`) with SIGINT ignored, and every process below it
# inherits that: the Ctrl-C tests' `nbest` subprocesses would run to the end. Python's own handler
# is not inherited across exec, so the subprocesses get the default disposition back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def scripted() -> ScriptedEngine:
    return ScriptedEngine()


def engine_processes(root: psutil.Process | None = None) -> list[psutil.Process]:
    """vLLM engine processes below ``root`` (this process by default)."""
    found = []
    for proc in (root or psutil.Process()).children(recursive=True):
        try:
            text = proc.name() + " " + " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "EngineCore" in text or "vllm" in text.lower():
            found.append(proc)
    return found


def wait_gone(procs: list[psutil.Process], timeout: float = 15.0) -> list[psutil.Process]:
    """Wait until ``procs`` exit; the ones still alive after ``timeout``."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_engine() -> AsyncIterator[VLLMEngine]:
    """The embedded default model on the real vLLM engine, started once.

    Tests must not close it; build orchestrators with ``close_engines=False``.
    On teardown it checks that no engine process outlives the engine.
    """
    engine = VLLMEngine.default()
    before = {p.pid for p in engine_processes()}  # e.g. a vLLM server another fixture started
    await engine.start()
    procs = [p for p in engine_processes() if p.pid not in before]
    assert procs, "vLLM started no engine process: the orphan check below would prove nothing"
    try:
        yield engine
    finally:
        started = time.perf_counter()
        await engine.aclose()
        alive = wait_gone(procs)
        assert not alive, f"engine processes still alive {time.perf_counter() - started:.0f} s after aclose: {alive}"


SERVER_START_S = 600.0
"""Most seconds to wait for the server's /health (a hang guard: ~40 s on 2 cores)."""


@dataclass
class Server:
    url: str
    model: str
    port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, vllm_engine: VLLMEngine) -> Iterator[Server]:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1, in its own
    process group; the whole group is killed at the end, and checked gone.

    The in-process engine starts first (and so is torn down last): its own
    orphan check counts vLLM processes below pytest, and must not count these.
    """
    del vllm_engine
    model = str(prepare_default_model())
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--enforce-eager", "--max-model-len", "2048", "--no-enable-chunked-prefill",
           "--dtype", "bfloat16"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    procs: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after {SERVER_START_S:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
        assert len(procs) >= 2, "the server started no engine process: the orphan check would prove nothing"
        yield Server(f"http://127.0.0.1:{port}/v1", model, port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        alive = wait_gone(procs, timeout=30)
        if alive:
            for p in alive:
                p.kill()
        assert not alive, f"vLLM server processes outlived the server: {alive}"


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The embedded MiniLM, loaded once per test session for every test that needs the real model."""
    embedder = Embedder()
    embedder.load()
    return embedder
