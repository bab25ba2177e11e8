"""Many requests over replicas on a Ray cluster: what ``nbest batch --ray`` and
``nbest eval --ray`` run on.

Each replica is a Ray actor (:class:`Replica`) owning one
:class:`~nbest.orchestrator.Orchestrator`, built once from a
:class:`~nbest.distributed.replica.ReplicaSpec` and reused for every request.
The driver (:class:`ReplicaPool`) keeps the input and the output:
:meth:`ReplicaPool.as_completed` has the shape of
:meth:`Orchestrator.as_completed <nbest.orchestrator.core.Orchestrator.as_completed>`
(``(position, Result)`` as each finishes), so the batch writer and the
evaluation take their Results from either::

    spec = ReplicaSpec(engines=engine_configs(None), rerankers=["vote"], concurrency=8)
    with ray_cluster(None):                          # a local cluster, shut down on the way out
        async with ReplicaPool(spec, RayOptions(replicas=2)) as pool:
            async for i, result in pool.as_completed(requests):
                ...

Flow control: each replica runs ``spec.concurrency`` requests at once and the
driver sends it at most ``in_flight`` (default twice that), so the replica
always has the next request at hand and memory stays flat on both sides.

Faults: a replica that dies (its process or node is lost: ``RayActorError``;
or its engine died: ``EngineDeadError``) is killed and replaced, at most
``max_restarts`` times over the run; the requests it held go to the other
replicas (or its replacement), each run to the end exactly once, so each
position is yielded once. When no replica is left the run stops with
:class:`~nbest.errors.EngineDeadError`; what was yielded stays valid. An
error raised by the replica's own code (a bad request, a bug) is raised as is.

Ray is imported when a pool starts, never at import time (see :mod:`nbest.distributed.cluster`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from nbest.distributed.cluster import RayOptions, check_address, import_ray, ray_cluster
from nbest.distributed.replica import ReplicaSpec, build_orchestrator, run_options
from nbest.errors import ConfigError, EngineDeadError, EngineError
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.many import run_many
from nbest.types import Request, Result

__all__ = ["RayOptions", "Replica", "ReplicaPool", "check_address", "import_ray", "ray_cluster"]

_ENV_PREFIXES = ("VLLM_", "NBEST_", "HF_", "TQDM_", "OMP_", "TOKENIZERS_")
"""Environment variables of the driver that replicas get too (model cache, vLLM settings, logging)."""


class Replica:
    """The body of a replica actor: one orchestrator, built from the spec once,
    entered by :meth:`start` and serving :meth:`run` until :meth:`stop`.

    A Ray async actor: every call runs on the actor's event loop; at most
    ``spec.concurrency`` requests are in progress, the others wait their turn.
    Requests and Results travel as JSON text.
    """

    def __init__(self, spec: str) -> None:
        self.spec = ReplicaSpec.parse(spec)
        self._run = run_options(self.spec)
        self._limiter = anyio.CapacityLimiter(self.spec.concurrency)
        self._orch: Orchestrator | None = None
        self._stop = anyio.Event()
        self._closed = anyio.Event()

    async def start(self) -> dict[str, Any]:
        """Build the orchestrator and start its engines (idempotent); returns
        where the replica runs (``pid``, ``node``).

        Raises:
            Exception: what building or starting raised (a bad config, a model that does not load).
        """
        if self._orch is None:
            orch = build_orchestrator(self.spec)
            ready = anyio.Event()
            failure: list[BaseException] = []

            async def hold() -> None:  # enters and leaves the orchestrator in one task
                try:
                    async with orch:
                        self._orch = orch
                        ready.set()
                        await self._stop.wait()
                except Exception as exc:
                    failure.append(exc)
                finally:
                    ready.set()
                    self._closed.set()

            import asyncio

            self._holder = asyncio.get_running_loop().create_task(hold())
            await ready.wait()
            if failure:
                raise failure[0]
        ray = import_ray()
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    async def run(self, request: str) -> str:
        """One request (JSON) run to its Result (JSON), as :meth:`Orchestrator.run` runs it.

        Raises:
            ConfigError: a request this replica cannot serve.
            EngineDeadError: its engine died.
        """
        if self._orch is None:
            raise EngineError("replica: run before start")
        async with self._limiter:
            result = await self._orch.run(Request.parse(request), **self._run)
        return result.model_dump_json()

    async def stop(self) -> None:
        """Leave the orchestrator (its engines close)."""
        self._stop.set()
        if self._orch is not None:
            await self._closed.wait()


State = Literal["starting", "ready", "restarting", "lost"]


@dataclass
class _Slot:
    number: int
    actor: Any = None
    state: State = "starting"
    generation: int = 0
    in_flight: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _cause(exc: BaseException) -> BaseException:
    """The exception a replica raised, out of Ray's wrapper."""
    return getattr(exc, "cause", None) or exc


def _why(exc: BaseException) -> str:
    """Why a replica was lost, in a few words on one line."""
    if isinstance(exc, import_ray().exceptions.RayActorError):
        return "its process or node was lost"
    cause = _cause(exc)
    lines = str(cause).strip().splitlines()
    return (lines[0][:200] if lines else "") or type(cause).__name__


class ReplicaPool:
    """Replicas on the Ray cluster this process is connected to (see
    :func:`ray_cluster`); use as an async context manager: entering starts
    every replica (and waits until each is ready), leaving stops them.

    Raises:
        ConfigError: a bad spec or option, or a replica that needs more than
            the cluster has.
    """

    def __init__(
        self,
        spec: ReplicaSpec,
        options: RayOptions,
        *,
        on_change: Callable[[], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        spec.check()
        options.check()
        self.spec = spec
        self.options = options
        self.in_flight = options.in_flight or 2 * spec.concurrency
        """Requests sent ahead to each replica."""
        self.restarts = 0
        """Replicas started again so far."""
        self.on_change = on_change
        """Called when a replica changes state (ready, busy, restarting, lost)."""
        self.say = say
        """Told, in a sentence, when a replica dies and what happens next."""
        self._slots = [_Slot(i) for i in range(options.replicas)]
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._actor_class: Any = None
        self._lost_because: BaseException | None = None

    # -- checking ------------------------------------------------------------

    def check(self, requests: Iterable[Request]) -> None:
        """Check every request as a replica will (its plan, its ``n``) on an
        orchestrator built here from the spec, not started: bad input stops
        the run before a replica starts. ``requests`` is taken one at a time
        (an iterator is not held).

        Raises:
            ConfigError: ``requests[i] (id): ...`` for the first request that cannot be served.
        """
        check = self.checker()
        for i, request in enumerate(requests):
            try:
                check(request)
            except ConfigError as exc:
                raise ConfigError(f"requests[{i}] ({request.id}): {exc}", parameter=exc.parameter, value=exc.value) from None

    def checker(self) -> Callable[[Request], None]:
        """The check :meth:`check` makes of each request, as a function over one
        (an orchestrator built once from the spec, not started): ``nbest batch
        --ray`` calls it on every line while it reads the input.

        Raises:
            ConfigError: from the spec (here); the returned function raises the
                plan's ConfigError.
        """
        orch = build_orchestrator(self.spec)

        def check(request: Request) -> None:
            orch.plan(request)

        return check

    def _check_resources(self, ray: Any) -> None:
        """The replicas must fit in the cluster (each, and all of them at once): refused
        on a local cluster, said on a joined one (an autoscaler may add the nodes it needs)."""
        total = ray.cluster_resources()
        for name, key, amount in (
            ("--replica-cpus", "CPU", self.options.replica_cpus),
            ("--replica-gpus", "GPU", self.options.replica_gpus),
        ):
            have = float(total.get(key, 0.0))
            replicas = self.options.replicas
            if amount > have:
                message = f"{name}: a replica needs {amount:g} {key}(s); the cluster has {have:g}"
            elif amount * replicas > have:
                need = amount * replicas
                message = f"--replicas: {replicas} replicas of {amount:g} {key}(s) need {need:g}; the cluster has {have:g}"
                name, amount = "--replicas", replicas
            else:
                continue
            if self.options.address is None:
                raise ConfigError(message, parameter=name, value=amount)
            self._say(f"{message} now; waiting for nodes (at most {self.options.start_timeout:g} s)")

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> ReplicaPool:
        ray = import_ray()
        self._check_resources(ray)
        self._actor_class = ray.remote(Replica)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            failures: list[Exception] = []

            async def start(slot: _Slot) -> None:
                try:
                    await self._start(slot)
                except Exception as exc:  # its code failed to start: the run fails with that error
                    failures.append(exc)
                    starting.cancel_scope.cancel()

            async with anyio.create_task_group() as starting:
                for slot in self._slots:
                    starting.start_soon(start, slot)
            if failures:
                raise failures[0]
            if not any(s.state == "ready" for s in self._slots):
                raise EngineDeadError(f"no replica started: {self._last_why()}")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self._stop_all()

    async def _stop_all(self) -> None:
        with anyio.CancelScope(shield=True):
            ray = import_ray()
            actors = [s.actor for s in self._slots if s.actor is not None]
            with anyio.move_on_after(30):  # engines close cleanly; then the actors go
                async with anyio.create_task_group() as closing:
                    for actor in actors:
                        closing.start_soon(self._stop_actor, actor)
            for slot in self._slots:
                if slot.actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(slot.actor, no_restart=True)
                    slot.actor = None

    @staticmethod
    async def _stop_actor(actor: Any) -> None:
        with contextlib.suppress(Exception):
            await actor.stop.remote()

    def _options(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        options: dict[str, Any] = {
            "num_cpus": self.options.replica_cpus,
            "num_gpus": self.options.replica_gpus,
            "max_restarts": 0,  # the pool starts a replacement itself, with the requests re-sent
        }
        if env:
            options["runtime_env"] = {"env_vars": env}
        return options

    async def _start(self, slot: _Slot) -> None:
        """Start ``slot``'s replica, again while it dies starting and restarts remain.

        Raises:
            Exception: what the replica's code raised while starting (on the first start).
        """
        ray = import_ray()
        spec = self.spec.model_dump_json()
        first = slot.generation == 0
        while True:
            actor = self._actor_class.options(**self._options()).remote(spec)
            slot.actor = actor
            try:
                with anyio.fail_after(self.options.start_timeout):
                    slot.info = await actor.start.remote()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
                slot.actor = None
                cause = _cause(exc)
                if isinstance(exc, TimeoutError):
                    cause = EngineError(f"replica {slot.number} did not start within {self.options.start_timeout:g} s")
                died = isinstance(exc, ray.exceptions.RayActorError) or isinstance(cause, EngineDeadError)
                if first and not died:
                    raise cause from None
                self._lost_because = cause
                if self.restarts >= self.options.max_restarts or not died:
                    slot.state = "lost"
                    self._notify()
                    return
                self.restarts += 1
                slot.state = "restarting"
                self._notify()
                continue
            slot.state = "ready"
            self._notify()
            return

    def _replace(self, slot: _Slot, generation: int, exc: BaseException) -> None:
        """``slot``'s replica died while serving generation ``generation``: kill it
        and start another (once per death, whoever noticed first)."""
        if slot.generation != generation or slot.state != "ready":
            return
        self._lost_because = exc
        slot.generation += 1
        ray = import_ray()
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        slot.actor = None
        why = _why(exc)
        if self.restarts >= self.options.max_restarts:
            self._say(f"replica {slot.number} died ({why}); no restart left, its requests go to the others")
            slot.state = "lost"
        else:
            self._say(
                f"replica {slot.number} died ({why}); its requests go to the others, starting another "
                f"({self.restarts + 1} of --max-restarts {self.options.max_restarts})"
            )
            self.restarts += 1
            slot.state = "restarting"
            assert self._tg is not None
            self._tg.start_soon(self._restart, slot)
        self._notify()

    async def _restart(self, slot: _Slot) -> None:
        try:
            await self._start(slot)
        except Exception as exc:  # the replacement could not start: go on with the others
            self._lost_because = exc
            slot.state = "lost"
            self._notify()

    def _last_why(self) -> str:
        return _why(self._lost_because) if self._lost_because is not None else "unknown"

    def _say(self, message: str) -> None:
        if self.say is not None:
            self.say(message)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        if self.on_change is not None:
            self.on_change()

    # -- running -------------------------------------------------------------

    def status(self) -> str:
        """The replicas' states in a few words.

        >>> pool = ReplicaPool(ReplicaSpec(engine_factory="m:f"), RayOptions(replicas=2))
        >>> pool.status()
        'replicas 0/2 ready, 0 busy, 2 starting'
        """
        ready = sum(s.state == "ready" for s in self._slots)
        busy = sum(s.state == "ready" and s.in_flight > 0 for s in self._slots)
        text = f"replicas {ready}/{len(self._slots)} ready, {busy} busy"
        for state in ("starting", "restarting", "lost"):
            count = sum(s.state == state for s in self._slots)
            if count or (state == "restarting" and self.restarts):
                text += f", {count} {state}"
        return text

    def as_completed(self, requests: Sequence[Request]) -> AsyncGenerator[tuple[int, Result], None]:
        """Run every request on the replicas; yield ``(i, result)`` as each
        finishes, ``i`` its position in ``requests``, each position once.

        Requests are sent in input order, at most ``in_flight`` per replica.
        Leaving the loop early, or being cancelled, stops sending (the
        requests still on the replicas end with them).

        Raises:
            EngineDeadError: every replica died and no restart is left.
            Exception: what a replica's code raised for a request (a ConfigError
                for a request it cannot serve).
        """
        if self._tg is None:
            raise EngineError("the replica pool is not started (use async with)")
        return run_many(self._tg, requests, self._send, len(self._slots) * self.in_flight)

    async def run(self, request: Request) -> Result:
        """Run one request on a replica (the least busy ready one; again on
        another if it dies) and return its Result: what :meth:`as_completed`
        sends for each request. ``nbest batch --ray`` calls it from
        ``replicas * in_flight`` workers taking the lines of its input one at
        a time (:func:`nbest.batch.runner.run_requests`), so no list of every
        request is built.

        Raises:
            EngineError: the pool is not started.
            EngineDeadError: every replica died and no restart is left.
            Exception: what the replica's code raised for the request.
        """
        if self._tg is None:
            raise EngineError("the replica pool is not started (use async with)")
        return await self._send(request)

    async def _acquire(self) -> _Slot:
        while True:
            free = [s for s in self._slots if s.state == "ready" and s.in_flight < self.in_flight]
            if free:
                slot = min(free, key=lambda s: s.in_flight)
                slot.in_flight += 1
                return slot
            if all(s.state == "lost" for s in self._slots):
                raise EngineDeadError(
                    f"every replica died and no restart is left ({self.restarts} of --max-restarts "
                    f"{self.options.max_restarts} used); the last one: {self._last_why()}"
                )
            await self._changed.wait()

    async def _send(self, request: Request) -> Result:
        ray = import_ray()
        payload = request.model_dump_json()
        while True:
            slot = await self._acquire()
            generation = slot.generation
            try:
                text = await slot.actor.run.remote(payload)
            except Exception as exc:
                if not (isinstance(exc, ray.exceptions.RayActorError) or isinstance(_cause(exc), EngineDeadError)):
                    raise _cause(exc) from None
                self._replace(slot, generation, exc)
                continue  # to another replica, or this one's replacement
            finally:
                slot.in_flight -= 1
                self._notify()
            return Result.model_validate_json(text)
