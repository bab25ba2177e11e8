"""Shared fixtures: a scripted engine for unit tests, one real vLLM engine per session."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import psutil
import pytest
import pytest_asyncio

from nbest import VLLMEngine
from tests.scripted import ScriptedEngine

# Plugin modules register their kinds when imported: only the plugin tests import them
# (through entry points), never the collection of doctests.
collect_ignore = ["plugins", "plugin_engine.py"]

# The embedded model is small: 1 GiB of KV cache holds ~45k tokens, and keeps
# several engines (the in-process one, vllm serve processes) within memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


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
