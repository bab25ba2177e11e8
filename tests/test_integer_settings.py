"""Counts in the Python API (``max_in_flight``, ``max_n``, ``concurrency``) are
whole numbers: a float, a string or a bool is a ConfigError naming the
parameter, raised before any work starts."""

from __future__ import annotations

import pytest

from nbest import ConfigError, Orchestrator
from nbest.orchestrator.many import run_many
from nbest.types import Request
from tests.scripted import ScriptedEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOT_COUNTS = [2.5, "8", True, 0, -1, None, float("nan")]


@pytest.mark.parametrize("value", NOT_COUNTS)
@pytest.mark.parametrize("parameter", ["max_in_flight", "max_n"])
def test_orchestrator_counts_must_be_whole_numbers(parameter: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{parameter}: must be a whole number >= 1") as info:
        Orchestrator(ScriptedEngine(), **{parameter: value})  # type: ignore[arg-type]
    assert info.value.parameter == parameter


@pytest.mark.parametrize("value", NOT_COUNTS)
async def test_generate_many_concurrency_must_be_a_whole_number(scripted: ScriptedEngine, value: object) -> None:
    async with Orchestrator(scripted) as orch:
        with pytest.raises(ConfigError, match="concurrency: must be a whole number >= 1") as info:
            await orch.generate_many(["a", "b"], n=1, concurrency=value)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="concurrency: must be a whole number >= 1"):
            async for _ in orch.as_completed([Request(prompt="a", n=1)], concurrency=value):  # type: ignore[arg-type]
                pass
    assert info.value.parameter == "concurrency"
    assert scripted.history == []  # checked before any work started


async def test_run_many_checks_its_concurrency_too(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted) as orch:
        tg = orch._require_open()
        with pytest.raises(ConfigError, match="concurrency"):
            async for _ in run_many(tg, [Request(prompt="a", n=1)], orch.run, 2.5):  # type: ignore[arg-type]
                pass


def test_whole_numbers_are_accepted() -> None:
    orch = Orchestrator(ScriptedEngine(), max_in_flight=3, max_n=5)
    assert orch.max_n == 5
