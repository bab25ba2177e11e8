"""Many requests under a limit: the engine room of
:meth:`Orchestrator.as_completed <nbest.orchestrator.core.Orchestrator.as_completed>`.

``concurrency`` workers take the requests in input order, each running one
request at a time; every Result is handed back with its request's position as
soon as it is ranked. The workers run in a task group the caller owns (the
orchestrator's), not in the caller's loop, so the caller never yields from
inside a cancel scope. Leaving the loop early or being cancelled cancels the
workers, whose requests abort their engine requests, and waits for them; a
worker's error (an engine died) stops the others and is raised to the caller.

Two requests with the same id may be given: a request whose id an earlier one
has runs under a stand-in id (``id~2``), so no two engine requests in flight
share an id, and its Result carries the original id again.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import anyio
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


def _stand_ins(requests: Sequence[Request]) -> list[Request]:
    """``requests``, a repeated id replaced by a stand-in no other request has."""
    taken = {r.id for r in requests}
    seen: set[str] = set()
    runs = []
    for request in requests:
        if request.id in seen:
            k = 2
            while f"{request.id}~{k}" in taken:
                k += 1
            taken.add(f"{request.id}~{k}")
            request = request.model_copy(update={"id": f"{request.id}~{k}"})
        seen.add(request.id)
        runs.append(request)
    return runs


async def run_many(
    tg: TaskGroup,
    requests: Sequence[Request],
    run: Callable[[Request], Awaitable[Result]],
    concurrency: int,
) -> AsyncGenerator[tuple[int, Result], None]:
    """Yield ``(i, run(requests[i]))`` as each finishes, at most ``concurrency``
    running at once, the workers in ``tg``.

    Raises:
        Exception: what ``run`` raised first (the other requests are cancelled).
        NbestError: ``tg`` was cancelled (the orchestrator closed) before every
            request finished.
    """
    check_count(concurrency, "concurrency")
    runs = _stand_ins(requests)
    send, receive = anyio.create_memory_object_stream[tuple[int, Result]](concurrency)
    workers = anyio.CancelScope()
    done = anyio.Event()
    failure: list[Exception] = []
    todo = iter(enumerate(runs))

    async def worker() -> None:
        try:
            for i, request in todo:
                result = await run(request)
                if result.id != requests[i].id:  # it ran under a stand-in id
                    result = result.model_copy(update={"id": requests[i].id})
                await send.send((i, result))
        except Exception as exc:  # an engine died: stop every request, tell the caller
            failure.append(exc)
            workers.cancel()

    async def pool() -> None:
        try:
            with workers:
                async with anyio.create_task_group() as group:
                    for _ in range(min(concurrency, len(runs))):
                        group.start_soon(worker)
        finally:
            send.close()
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
    if yielded < len(runs):
        raise NbestError(f"the orchestrator closed with {len(runs) - yielded} request(s) unfinished")
