"""A third-party engine kind, as a plugin package publishes it::

    [project.entry-points."nbest.engines"]
    echo = "tests.plugin_engine:EchoEngineConfig"

Not registered at import: ``ENGINES.load_plugins()`` registers it under its
entry point's name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Literal, Self

from nbest.engines import Engine, EngineConfig
from nbest.types import CandidateUpdate, Prompt, SamplingParams


class EchoEngine:
    """Answers every request with ``"<text> <seed>"``."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text
        self.starts = 0
        self.closed = False

    async def start(self) -> None:
        self.starts += 1

    async def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]:
        yield CandidateUpdate(
            text=f"{self.text} {params.seed}", num_tokens=2, cumulative_logprob=-1.0, finish_reason="stop", finished=True
        )

    async def abort(self, request_id: str) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True


class EchoEngineConfig(EngineConfig):
    """An :class:`EchoEngine`. Short form ``echo[:TEXT]``."""

    short_help = "echo[:TEXT]"

    kind: Literal["echo"] = "echo"
    text: str = "echo"
    """What every candidate says (before its seed)."""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        return cls(text=arg or "echo")

    def build(self, name: str, environ: Mapping[str, str]) -> Engine:
        return EchoEngine(name or "echo", self.text)
