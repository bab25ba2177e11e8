"""The engine's keeper: opens the orchestrator, watches its health, restarts a dead engine.

Given an orchestrator factory, :func:`~nbest.server.app.create_app` runs one
:class:`Supervisor` for the app's lifetime. It opens the first orchestrator
(the server starts once that works; a failure there fails the start, as
before), then checks the engines' health every ``check_interval_s`` seconds
and at once when a request met a dead engine. An engine that reports
``Health(ok=False, restart=True)`` (a vLLM engine whose engine core died) is
closed with its orchestrator and a new one is built by the factory: up to
``max_attempts`` tries, waiting ``backoff_s``, then twice as long each time (at
most ``max_backoff_s``). A restarted engine that dies again within ``stable_s``
of its start counts as a failed try too, so an engine that crashes soon after
every start is not restarted forever. While it restarts, generation requests get 503 with
``Retry-After`` and ``/healthz`` answers 503; each restart is counted in
``nbest_engine_restarts`` and logged. When every attempt failed the server
stays up, answering 503 (``/healthz`` says ``dead``), for whatever runs it to
replace it.

The orchestrator is opened and closed in the supervisor's own task: an anyio
task group must be left in the task that entered it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import anyio
from pydantic import Field

from nbest.engines.base import Health, HealthReporting
from nbest.orchestrator import Orchestrator
from nbest.types import NbestModel

__all__ = ["RestartPolicy", "State", "Supervisor", "engine_health"]

log = logging.getLogger("nbest.server")

State = Literal["starting", "ok", "unhealthy", "restarting", "dead"]
"""``starting``: the first engine is loading; ``ok``: serving; ``unhealthy``: an
engine cannot serve but heals by itself (a fleet whose endpoints are all down);
``restarting``: the engine died and a new one is loading; ``dead``: the engine
died and will not be restarted (no factory, or every restart failed)."""


class RestartPolicy(NbestModel):
    """How the server restarts an engine that died."""

    max_attempts: int = Field(default=5, ge=0)
    """Tries to start a new engine after one died (0: never restart)."""
    backoff_s: float = Field(default=1.0, ge=0)
    """Seconds before the second try; doubled for each further one."""
    max_backoff_s: float = Field(default=60.0, ge=0)
    """Longest wait between tries."""
    stable_s: float = Field(default=60.0, ge=0)
    """A restarted engine that dies within this many seconds of its start counts as a
    failed try (a crash loop ends after ``max_attempts``); one that lived longer resets the count."""
    check_interval_s: float = Field(default=1.0, gt=0)
    """Seconds between health checks (a request that meets a dead engine checks at once)."""
    retry_after_s: int = Field(default=5, ge=1)
    """The ``Retry-After`` given with a 503 while the engine restarts."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (0-based; the first is immediate).

        >>> [RestartPolicy().delay(i) for i in range(4)]
        [0.0, 1.0, 2.0, 4.0]
        >>> RestartPolicy().delay(5000)
        60.0
        """
        if attempt <= 0:
            return 0.0
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempt - 1, 64))


def engine_health(orchestrator: Orchestrator) -> Health:
    """The orchestrator's engines' health, together: not ok when one is not; a restart
    when one needs it. Engines that do not report health count as healthy."""
    bad = []
    for engine in {id(e): e for e in orchestrator.engines.values()}.values():
        if isinstance(engine, HealthReporting):
            health = engine.health()
            if not health.ok:
                bad.append(health)
    if not bad:
        return Health(ok=True)
    return Health(ok=False, detail="; ".join(h.detail for h in bad), restart=any(h.restart for h in bad))


class Supervisor:
    """Owns the orchestrator the factory builds; see the module docstring."""

    def __init__(
        self,
        factory: Callable[[], Orchestrator],
        policy: RestartPolicy,
        on_open: Callable[[Orchestrator | None], None],
        on_restart: Callable[[], None],
    ) -> None:
        self.factory = factory
        self.policy = policy
        self.state: State = "starting"
        self.detail = ""
        self.restarts = 0
        self._on_open = on_open
        self._on_restart = on_restart
        self._wake = anyio.Event()
        self._ready = anyio.Event()
        self._start_error: BaseException | None = None

    def wake(self) -> None:
        """Check the engine's health now (a request met a dead engine)."""
        self._wake.set()

    async def wait_started(self) -> bool:
        """Wait for the first orchestrator to open; False when it failed (see :meth:`raise_start_error`)."""
        await self._ready.wait()
        return self._start_error is None

    def raise_start_error(self) -> None:
        """Raise what opening the first orchestrator raised, if it failed."""
        if self._start_error is not None:
            raise self._start_error

    async def run(self) -> None:
        """Open, watch, restart, until cancelled."""
        attempt = 0
        while True:
            try:
                orchestrator = await self._open()
            except Exception as exc:
                if not self._ready.is_set():
                    self._start_error = exc
                    self._ready.set()
                    return
                attempt += 1
                self.detail = f"engine restart {attempt} of {self.policy.max_attempts} failed: {type(exc).__name__}: {exc}"
                log.error("nbest: %s", self.detail)
            else:
                if self._ready.is_set():
                    self.restarts += 1
                    self._on_restart()
                    log.warning("nbest: engine restarted (restart %d); serving again", self.restarts)
                restarted = self._ready.is_set()
                opened = time.monotonic()
                self.state, self.detail = "ok", ""
                self._on_open(orchestrator)
                self._ready.set()
                try:
                    health = await self._watch(orchestrator)
                    lived = time.monotonic() - opened
                    if restarted and lived < self.policy.stable_s:
                        attempt += 1
                        self.detail = (
                            f"engine restart {attempt} of {self.policy.max_attempts} died {lived:.1f} s after it started: "
                            f"{health.detail}"
                        )
                    else:
                        attempt = 0
                        self.detail = health.detail
                    self.state = "restarting"
                    log.error("nbest: %s; restarting the engine", self.detail)
                finally:
                    self._on_open(None)
                    await self._close(orchestrator)
            if attempt >= self.policy.max_attempts:
                self.state = "dead"
                log.error("nbest: giving up on the engine after %d failed restarts; /healthz answers 503", attempt)
                return
            self.state = "restarting"
            await anyio.sleep(self.policy.delay(attempt))

    async def _open(self) -> Orchestrator:
        """A new orchestrator, open; one that fails to open is closed (what it started stops)."""
        orchestrator = self.factory()
        try:
            await orchestrator.__aenter__()
        except BaseException:
            await self._close(orchestrator)
            raise
        return orchestrator

    @staticmethod
    async def _close(orchestrator: Orchestrator) -> None:
        """Close it (aborting what runs on it, closing its engines); a failure is logged, not raised."""
        # not under a shield of our own: the orchestrator's task group must be left in the
        # scope it was entered in (it shields the closing of its engines itself)
        try:
            await orchestrator.__aexit__(None, None, None)
        except Exception as exc:
            log.warning("nbest: closing the old engine: %s: %s", type(exc).__name__, exc)

    async def _watch(self, orchestrator: Orchestrator) -> Health:
        """Return once the engine needs a restart."""
        while True:
            with anyio.move_on_after(self.policy.check_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            health = engine_health(orchestrator)
            if not health.ok and health.restart:
                return health
