"""The Engine protocol: what the orchestrator needs from a text generator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from nbest.types import CandidateUpdate, Prompt, SamplingParams

__all__ = ["Engine", "Startable"]


@runtime_checkable
class Engine(Protocol):
    """Generates one candidate per call.

    ``generate`` yields :class:`CandidateUpdate` s for one request: zero or more
    partial ones, then one with ``finished=True``. It raises
    :class:`~nbest.errors.GenerationError` when this one request failed and
    :class:`~nbest.errors.EngineDeadError` when the engine is gone. ``abort``
    stops a running request (a no-op for an unknown or finished id) and
    ``aclose`` releases everything the engine holds (processes, sockets).
    """

    name: str

    def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]: ...

    async def abort(self, request_id: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Startable(Protocol):
    """An engine with a start-up step (load the model, open connections).

    :class:`~nbest.orchestrator.Orchestrator` awaits ``start()`` on every engine
    that has one when it opens. ``start()`` raises
    :class:`~nbest.errors.EngineError` when the engine cannot start.
    """

    async def start(self) -> None: ...
