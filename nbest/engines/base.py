"""The Engine protocol: what the orchestrator needs from a text generator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nbest.types import CandidateUpdate, Prompt, SamplingParams

__all__ = ["Engine", "Health", "HealthReporting", "SharesCpu", "Startable", "describe_engine", "streams_tokens"]


@runtime_checkable
class Engine(Protocol):
    """Generates one candidate per call.

    ``generate`` yields :class:`CandidateUpdate` s for one request: zero or more
    partial ones, then one with ``finished=True``. It raises
    :class:`~nbest.errors.GenerationError` when this one request failed and
    :class:`~nbest.errors.EngineDeadError` when the engine is gone. ``abort``
    stops a running request (a no-op for an unknown or finished id) and
    ``aclose`` releases everything the engine holds (processes, sockets).

    Token updates: an engine whose class sets ``token_updates = True`` also
    accepts ``generate(prompt, params, request_id, tokens=True)``; it then yields
    a partial update as tokens arrive, each holding the new tokens'
    log-probabilities in ``CandidateUpdate.new_token_logprobs`` (and their
    alternatives in ``new_top_logprobs``). Without ``tokens=True`` (the default)
    it may yield only the final update. Callers pass ``tokens=True`` only to an
    engine for which :func:`streams_tokens` is true.
    """

    name: str

    def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]: ...

    async def abort(self, request_id: str) -> None: ...

    async def aclose(self) -> None: ...


def streams_tokens(engine: object) -> bool:
    """True when ``engine`` can report tokens as they are generated (``generate(..., tokens=True)``).

    >>> class Quiet:
    ...     name = "quiet"
    >>> streams_tokens(Quiet())
    False
    """
    return getattr(engine, "token_updates", False) is True


def describe_engine(engine: object) -> dict[str, Any]:
    """What ``engine`` runs with, for :attr:`Result.engines <nbest.types.Result.engines>`:
    its ``describe()`` when it has one (a few JSON-serialisable keys, ``kind`` first,
    never a secret), else its class name as ``kind``.

    Describing is optional for an engine: the orchestrator asks for it once per
    Result, so it must be cheap and must not block.

    >>> class Quiet:
    ...     name = "quiet"
    >>> describe_engine(Quiet())
    {'kind': 'Quiet'}
    >>> class Told:
    ...     def describe(self):
    ...         return {"kind": "told", "model": "m"}
    >>> describe_engine(Told())
    {'kind': 'told', 'model': 'm'}
    >>> class Broken:
    ...     def describe(self):
    ...         raise RuntimeError("no")
    >>> describe_engine(Broken())
    {'kind': 'Broken', 'error': 'describe() failed: RuntimeError'}
    """
    describe = getattr(engine, "describe", None)
    if callable(describe):
        try:
            return dict(describe())
        except Exception as exc:  # a plugin's report must not cost the Result its candidates
            return {"kind": type(engine).__name__, "error": f"describe() failed: {type(exc).__name__}"}
    return {"kind": type(engine).__name__}


@runtime_checkable
class Startable(Protocol):
    """An engine with a start-up step (load the model, open connections).

    :class:`~nbest.orchestrator.Orchestrator` awaits ``start()`` on every engine
    that has one when it opens. ``start()`` raises
    :class:`~nbest.errors.EngineError` when the engine cannot start.
    """

    async def start(self) -> None: ...


@runtime_checkable
class SharesCpu(Protocol):
    """An engine that computes on this machine's CPU cores and can take a share of them.

    :class:`~nbest.orchestrator.Orchestrator` calls ``share_cpu(i, k)`` on each of its
    ``k`` such engines before it starts them (see
    :meth:`nbest.engines.vllm.VLLMEngine.share_cpu`).
    """

    def share_cpu(self, index: int, count: int) -> None: ...


@dataclass(frozen=True)
class Health:
    """What an engine says about itself.

    >>> Health(ok=False, restart=True, detail="engine core exited")
    Health(ok=False, detail='engine core exited', restart=True)
    """

    ok: bool
    """True when the engine can serve requests now."""
    detail: str = ""
    """Why it cannot (empty when ``ok``)."""
    restart: bool = False
    """True when the engine will not recover by itself: close it and build a new one
    (a dead in-process engine). False for a fault the engine heals on its own (a
    fleet whose endpoints are all down is probed until one answers)."""


@runtime_checkable
class HealthReporting(Protocol):
    """An engine that can report its health cheaply (no request to the model).

    ``health()`` must not block: the server calls it on every ``/healthz``.
    Engines without it are taken as healthy.
    """

    def health(self) -> Health: ...
