"""Shared fixtures: a scripted engine for unit tests, one real vLLM engine per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from nbest import VLLMEngine
from tests.scripted import ScriptedEngine


@pytest.fixture
def scripted() -> ScriptedEngine:
    return ScriptedEngine()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_engine() -> AsyncIterator[VLLMEngine]:
    """The embedded default model on the real vLLM engine, started once.

    Tests must not close it; build orchestrators with ``close_engines=False``.
    """
    engine = VLLMEngine.default()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()
