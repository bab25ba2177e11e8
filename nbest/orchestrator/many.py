"""Many requests under a limit: the engine room of
:meth:`Orchestrator.as_completed <nbest.orchestrator.core.Orchestrator.as_completed>`
and of ``nbest batch`` (with or without ``--ray``).

``concurrency`` workers take the requests in input order, each running one
request at a time; every Result is handed back with its request's position as
soon as it is ranked. The requests may be a list or any iterable: a worker
takes the next request only when it is free, so a lazy iterable (an input file
parsed a line at a time) is never read more than ``concurrency`` requests
ahead, and memory stays O(``concurrency``) whatever its length. An iterable
that is not a list is advanced in a worker thread, one step at a time, so
parsing a long line does not hold up the event loop.

The workers run in a task group the caller owns (the orchestrator's), not in
the caller's loop, so the caller never yields from inside a cancel scope.
Leaving the loop early or being cancelled cancels the workers, whose requests
abort their engine requests, and waits for them; a worker's error (an engine
died, the iterable raised) stops the others and is raised to the caller.

Two requests with the same id may be given: a request whose id one still
running has runs under a stand-in id (``id~2``), so no two engine requests in
flight share an id, and its Result carries the original id again. Only the ids
in flight are kept, not every id seen.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from nbest.errors import ConfigError, NbestError
from nbest.types import Request, Result

__all__ = ["check_count", "run_many"]


def check_count(value: object, parameter: str) -> int:
    """``value`` when it is a whole number >= 1 (an ``int``, not a bool, float or string).

    >>> check_count(8, "concurrency")
    8
    >>> check_count(2.5, "concurrency")
    Traceback (most recent call last):
    ...
    nbest.errors.ConfigError: concurrency: must be a whole number >= 1 (got 2.5)

    Raises:
        ConfigError: naming ``parameter``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{parameter}: must be a whole number >= 1 (got {value!r})", parameter=parameter, value=value)
    return value


class _InFlight:
    """The ids of the requests running, each unique: a request whose id is taken
    runs under a stand-in (``id~2``, ``id~3``, ...) that no running request has."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def enter(self, request: Request) -> Request:
        """``request``, under a stand-in id if its own is taken; now running."""
        run = request
        if request.id in self._ids:
            k = 2
            while f"{request.id}~{k}" in self._ids:
                k += 1
            run = request.model_copy(update={"id": f"{request.id}~{k}"})
        self._ids.add(run.id)
        return run

    def leave(self, run: Request) -> None:
        self._ids.discard(run.id)


_END = object()


async def run_many(
    tg: TaskGroup,
    requests: Iterable[Request],
    run: Callable[[Request], Awaitable[Result]],
    concurrency: int,
    check: Callable[[int, Request], Request] | None = None,
) -> AsyncGenerator[tuple[int, Result], None]:
    """Yield ``(i, run(request))`` for the ``i``-th of ``requests`` as each
    finishes, at most ``concurrency`` running at once, the workers in ``tg``.

    ``requests`` is a list or any iterable, taken one request at a time as a
    worker frees (see the module docs). ``check(i, request)``, when given, is
    called on each as it is taken (on the event loop: cheap checks only) and
    returns the request to run. An iterable's error (a line that cannot be
    parsed) or ``check``'s ends the run as a failed ``run`` does, and nothing
    after it starts. An iterator left unfinished is closed (a generator's
    ``close``) once every worker has stopped.

    Raises:
        ConfigError: ``concurrency`` is not a whole number >= 1.
        Exception: what ``run``, ``check`` or the iterable raised first (the
            other requests are cancelled).
        NbestError: ``tg`` was cancelled (the orchestrator closed) before every
            request finished.
    """
    check_count(concurrency, "concurrency")
    listed = requests if isinstance(requests, Sequence) else None
    source = iter(requests)
    todo = enumerate(source)
    taking = anyio.Lock()  # one step at a time: a generator cannot run in two threads
    # a list is held already: up to `concurrency` Results may wait for the caller while the workers go on;
    # a lazy input's worker waits for the caller to take its Result before it takes another request
    send, receive = anyio.create_memory_object_stream[tuple[int, Result]](concurrency if listed is not None else 0)
    workers = anyio.CancelScope()
    done = anyio.Event()
    failure: list[Exception] = []
    running = _InFlight()
    taken = 0  # requests taken from the input
    ended = False  # the input has no more

    async def take() -> tuple[int, Request] | None:
        nonlocal taken, ended
        async with taking:
            if ended:
                return None
            step = next(todo, _END) if listed is not None else await anyio.to_thread.run_sync(next, todo, _END)
            if step is _END:
                ended = True
                return None
            taken += 1
            return step  # type: ignore[return-value]

    async def worker(more: Callable[[], None]) -> None:
        try:
            while (step := await take()) is not None:  # each request taken once, by a free worker
                i, request = step
                if check is not None:
                    request = check(i, request)
                more()  # this worker is busy now: another may take the next request
                runs = running.enter(request)
                try:
                    result = await run(runs)
                finally:
                    running.leave(runs)
                if result.id != request.id:  # it ran under a stand-in id
                    result = result.model_copy(update={"id": request.id})
                await send.send((i, result))
        except Exception as exc:  # an engine died, the input failed: stop every request, tell the caller
            failure.append(exc)
            workers.cancel()

    async def pool() -> None:
        started = 0
        try:
            with workers:
                async with anyio.create_task_group() as group:

                    def more() -> None:  # workers start as requests come: a huge concurrency starts no idle tasks
                        nonlocal started
                        if started < concurrency:
                            started += 1
                            group.start_soon(worker, more)

                    more()
        finally:
            send.close()
            close = getattr(source, "close", None) if listed is None else None
            if not ended and close is not None:  # a generator left early: let it close its file now
                close()
            done.set()

    tg.start_soon(pool)
    yielded = 0
    try:
        async with receive:
            async for item in receive:
                yield item
                yielded += 1
    finally:
        workers.cancel()  # the caller left early or was cancelled: abort what still runs
        with anyio.CancelScope(shield=True):
            await done.wait()
    if failure:
        raise failure[0]
    if listed is not None and yielded < len(listed):
        raise NbestError(f"the orchestrator closed with {len(listed) - yielded} request(s) unfinished")
    if not ended or yielded < taken:
        rest = "" if ended else ", the rest of the input not started"
        raise NbestError(f"the orchestrator closed with {taken - yielded} request(s) unfinished{rest}")
