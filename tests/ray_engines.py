"""Engine factories that replicas of ``nbest batch --ray`` import (``tests.ray_engines:NAME``):
each is called in the replica with its :class:`~nbest.distributed.ReplicaSpec` and returns
scripted engines. They read their settings from ``NBEST_TEST_*`` variables, which the driver
passes on to its replicas.

``answers``: the candidate with seed s answers "The answer is <s mod 3>." (as
``tests.batch_engines.seed_answers``), after ``$NBEST_TEST_DELAY`` seconds (default 0).

``dies_once``: as ``answers``, but the replica process exits at its
``$NBEST_TEST_DIE_AFTER``-th candidate (default 3) unless the file
``$NBEST_TEST_DIE_MARKER`` exists; it creates the file first, so exactly one replica dies.

``engine_dies_once``: as ``dies_once``, but the replica's engine dies (``EngineDeadError``)
and the process lives on.

``fails_to_start``: an engine whose start raises (a model that does not load).
"""

from __future__ import annotations

import os
from pathlib import Path

from nbest.engines.base import Engine
from nbest.errors import EngineDeadError, EngineError
from nbest.types import Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step


def _answer(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
    delay = float(os.environ.get("NBEST_TEST_DELAY", "0"))
    return Step(text=f"The answer is {(params.seed or 0) % 3}.", tokens=5, delay=delay)


def answers(spec: object = None) -> dict[str, Engine]:
    return {"default": ScriptedEngine(respond=_answer)}


def _dying(process: bool) -> dict[str, Engine]:
    after = int(os.environ.get("NBEST_TEST_DIE_AFTER", "3"))
    marker = Path(os.environ["NBEST_TEST_DIE_MARKER"])
    calls = 0

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        nonlocal calls
        calls += 1
        if calls == after:
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                pass
            else:
                if process:
                    os._exit(1)  # the replica's process dies with its requests in flight
                return Step(error=EngineDeadError("the engine core died", engine="scripted"))
        return _answer(prompt, params, request_id)

    return {"default": ScriptedEngine(respond=respond)}


def dies_once(spec: object = None) -> dict[str, Engine]:
    return _dying(process=True)


def engine_dies_once(spec: object = None) -> dict[str, Engine]:
    return _dying(process=False)


class _NoStart(ScriptedEngine):
    async def start(self) -> None:
        raise EngineError("model weights not found", engine=self.name)


def fails_to_start(spec: object = None) -> dict[str, Engine]:
    return {"default": _NoStart()}
