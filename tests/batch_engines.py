"""Engine factories for the batch/eval CLI tests: ``main(argv, engine_factory=...)``
in process, ``python -m tests.cli_with_engine FACTORY ARGS...`` in a subprocess.

``slow_scripted`` answers every candidate with "answer <seed>" after
``$NBEST_TEST_DELAY`` seconds (default 0), so a test can kill the command
while prompts are in flight.
"""

from __future__ import annotations

import os

from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine
from nbest.types import Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step


def slow_scripted(options: EngineOptions) -> dict[str, Engine]:
    delay = float(os.environ.get("NBEST_TEST_DELAY", "0"))

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        return Step(text=f"answer {params.seed}", delay=delay, tokens=5)

    return {"default": ScriptedEngine(respond=respond)}


def seed_answers(options: EngineOptions) -> dict[str, Engine]:
    """Candidate with seed s answers "The answer is <s mod 3>." (tokens: 5, mean log-prob -1)."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        return Step(text=f"The answer is {(params.seed or 0) % 3}.", tokens=5)

    return {"default": ScriptedEngine(respond=respond)}


def same_answer(options: EngineOptions) -> dict[str, Engine]:
    """Every candidate answers "The answer is 4." (an easy question for adaptive stopping)."""
    return {"default": ScriptedEngine(respond=lambda prompt, params, request_id: Step(text="The answer is 4.", tokens=5))}
