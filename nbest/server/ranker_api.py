"""Learning while serving: the learned rankers a server ranks with, their refits in the
background, and ``GET /v1/ranker``.

With ``ServerSettings(learn=True)`` (``nbest serve --learn``) the app keeps one
:class:`LiveRankers`. Each logged choice may make a refit due for its scopes
(``global``, ``task:NAME``, ``user:NAME``: see :class:`~nbest.server.learn.Learner`);
so may the timer (``learn_interval_s``) for scopes with new choices. Refits run in
rounds, one at a time, at most one round every ``learn_gap_s`` seconds, in a worker
thread: the learner fits, keeps a worse refit out, and saves the version; then every
scope whose current version changed gets its :class:`~nbest.rerankers.Ranker` built in
full (through the one builder, with the server's reranker cache) before the new table
of rankers replaces the old one in one assignment. A request reads that table once, so
it is ranked by one complete ranker, and its Result records that ranker's config
(``Result.ranker``) and version (``Result.ranker_version``; 0: the base ranker). A
refit that raises is logged and changes nothing; a version rolled back by ``nbest
prefs rollback`` in another process is picked up within ``POLL_S`` seconds.

A request naming its own rerankers is ranked by them, never by a learned ranker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter
from starlette.requests import Request as HttpRequest

from nbest.errors import ConfigError
from nbest.rerankers.ranker import Ranker
from nbest.rerankers.registry import RankerConfig
from nbest.server.errors import ApiError
from nbest.server.fit import effective_weights
from nbest.server.learn import Learner, RefitOutcome, meaning
from nbest.server.prefs import PreferenceStore
from nbest.server.settings import ServerSettings

__all__ = ["MAX_SCOPE_CHARS", "POLL_S", "WAIT_S", "LiveRankers", "Served", "router", "scope_labels"]

log = logging.getLogger("nbest.server")

router = APIRouter()

POLL_S = 5.0
"""Seconds between looks at the saved versions (a rollback made by another process)."""
WAIT_S = 5.0
"""Longest a ``POST /v1/choices`` waits for the refit its choice made due."""
MAX_SCOPE_CHARS = 200
"""Longest task or user name a scope is learned for."""


def scope_labels(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The task and user a request's metadata names (strings only; anything else: None).

    >>> scope_labels({"task": "translate", "user": 7})
    ('translate', None)
    """
    task, user = metadata.get("task"), metadata.get("user")
    return (task if isinstance(task, str) else None), (user if isinstance(user, str) else None)


@dataclass(frozen=True)
class Served:
    """A ranker ready to rank: built in full before it is published."""

    scope: str
    """The scope key it was learned for (``global``, ``task:NAME``, ``user:NAME``)."""
    version: int
    """Its saved version (0: the base ranker, nothing learned)."""
    ranker: Ranker | None
    """The ranker; None: the orchestrator's own (the base)."""


@dataclass
class _Round:
    """One round of refits: the scopes asked for and, once ``done``, their outcomes."""

    scopes: set[str] = field(default_factory=set)
    done: anyio.Event = field(default_factory=anyio.Event)
    outcomes: dict[str, RefitOutcome] = field(default_factory=dict)


class LiveRankers:
    """The learner of one app, the rankers it serves, and the loop that refits them.

    Args:
        settings: the ``learn_*`` settings.
        store: the preference log (choices and versions).
        base: the server's own ranker as a config (version 0).
        build: builds a Ranker from a config (the app's: the one builder with its cache).
    """

    def __init__(
        self, settings: ServerSettings, store: PreferenceStore, base: RankerConfig, build: Callable[[RankerConfig], Ranker]
    ) -> None:
        self.settings = settings
        self.store = store
        self.learner = Learner(
            store, base, min_choices=settings.learn_min, every=settings.learn_every, scope=settings.learn_scope
        )
        self._build = build
        self._served: dict[str, Served] = {}
        """Scope key -> its current learned ranker; replaced whole, never changed in place."""
        self._known: set[str] = {"global"}
        self._next = _Round()
        self._wake = anyio.Event()
        self._last_round = -math.inf
        self._seen: int | None = None
        """The log's ``data_version`` when the table was last built."""
        self.running = False
        """True while :meth:`run` runs (the app's lifespan): only then do refits happen."""
        self.rounds = 0
        """Refit rounds done (each may refit several scopes)."""

    # -- serving ------------------------------------------------------------------

    def keys(self, task: str | None = None, user: str | None = None) -> list[str]:
        """The scope keys of a request of that task and user, narrowest first."""
        return self.learner.scope_keys(task=task, user=user)

    def pick(self, metadata: Mapping[str, Any]) -> Served:
        """The ranker for a request with this metadata: the narrowest scope with a learned
        version, else the base. Reads the table once: what it returns stays whole."""
        served = self._served
        task, user = scope_labels(metadata)
        for key in self.keys(task, user):
            if key in served:
                return served[key]
        return Served("global", 0, None)

    # -- the loop -----------------------------------------------------------------

    async def load(self) -> None:
        """Publish the versions saved before this server started (the app awaits this
        before it serves, so the first request is ranked by them).

        Raises:
            StorageError: the log could not be read.
        """
        self._known |= await anyio.to_thread.run_sync(self._saved_scopes)
        seen = await anyio.to_thread.run_sync(self.store.data_version)
        await self._publish(await anyio.to_thread.run_sync(self._rebuild))
        self._seen = seen

    async def run(self) -> None:
        """Refit and publish until cancelled (the app's lifespan runs this).

        Each pass waits for a choice that made a refit due, the timer or ``POLL_S``;
        then runs the round (refits and builds in a worker thread) and publishes."""
        self.running = True
        interval = self.settings.learn_interval_s
        next_timer = time.monotonic() + interval if interval > 0 else math.inf
        try:
            while True:
                with anyio.move_on_after(max(0.0, min(POLL_S, next_timer - time.monotonic()))):
                    await self._wake.wait()
                self._wake = anyio.Event()
                timer = time.monotonic() >= next_timer
                if timer:
                    next_timer = time.monotonic() + interval
                try:
                    await self._round(timer)
                except Exception:  # never let learning take the server down: the next pass tries again
                    log.exception("nbest: learning: a refit round failed; the current rankers stay")
                    await anyio.sleep(max(1.0, self.settings.learn_gap_s))
        finally:
            self.running = False
            self._next.done.set()  # nobody waits for a round that will not run

    async def _round(self, timer: bool) -> None:
        current = self._next
        if timer:
            current.scopes |= await anyio.to_thread.run_sync(self._timer_scopes)
        if current.scopes:
            gap = self._last_round + self.settings.learn_gap_s - time.monotonic()
            if gap > 0:
                await anyio.sleep(gap)  # choices arriving meanwhile join this round
            self._next = _Round()
            self._last_round = time.monotonic()
            current.outcomes = await anyio.to_thread.run_sync(lambda: self._refit(sorted(current.scopes)))
            self.rounds += 1
        try:
            seen = await anyio.to_thread.run_sync(self.store.data_version)
            if seen != self._seen:  # a write by another process (a rollback): every scope is read again
                await self._publish(await anyio.to_thread.run_sync(self._rebuild))
                self._seen = seen
            elif current.scopes:  # only the scopes refitted here can have a new version
                await self._publish(await anyio.to_thread.run_sync(lambda: self._rebuild(current.scopes)))
        finally:
            if current is not self._next:
                current.done.set()

    async def _publish(self, table: dict[str, Served]) -> None:
        self._served = table  # the swap: one assignment of a table whose rankers are built

    def _saved_scopes(self) -> set[str]:
        return {v.scope for v in self.store.versions() if v.status == "current"}

    def _timer_scopes(self) -> set[str]:
        """Scopes with new choices since their last refit, and enough of them to learn."""
        out = set()
        for key in sorted(self._known):
            try:
                info = self.learner.describe(key)
            except Exception as exc:  # a broken log: the next pass tries again
                log.warning("nbest: learning: cannot read scope %s: %s: %s", key, type(exc).__name__, exc)
                continue
            new = _new_choices(info, self.settings.learn_every)
            if new > 0 and int(info.get("choices_logged", info.get("choices", 0)) or 0) >= self.settings.learn_min:
                out.add(key)
        return out

    def _refit(self, scopes: list[str]) -> dict[str, RefitOutcome]:
        """Refit each scope; a refit that raises is logged and keeps the current ranker."""
        outcomes = {}
        for key in scopes:
            try:
                outcome = self.learner.refit(key)
            except ConfigError as exc:  # e.g. too few usable choices: nothing to learn yet
                log.info("nbest: learning: no refit for %s: %s", key, exc)
                continue
            except Exception:
                log.exception("nbest: learning: the refit of %s failed; the current ranker stays", key)
                continue
            outcomes[key] = outcome
            log.info("nbest: learning (%s, version %d): %s", key, outcome.version, outcome.message)
        return outcomes

    def _rebuild(self, only: set[str] | None = None) -> dict[str, Served]:
        """The table of current versions, each ranker built in full (reused when unchanged);
        with ``only``, the other scopes are kept as they are."""
        old = self._served
        table: dict[str, Served] = {} if only is None else {k: v for k, v in old.items() if k not in only}
        for key in sorted(self._known | set(old) if only is None else only):
            try:
                saved = self.store.current_version(key)
            except Exception as exc:
                log.warning("nbest: learning: cannot read the versions of %s: %s: %s", key, type(exc).__name__, exc)
                if key in old:
                    table[key] = old[key]
                continue
            if saved is None:
                continue
            have = old.get(key)
            if have is not None and have.version == saved.version:
                table[key] = have
                continue
            try:
                ranker = self._build(RankerConfig.parse(saved.config))
            except Exception as exc:
                log.error(
                    "nbest: learning: cannot build version %d of %s (%s: %s); the current ranker stays",
                    saved.version, key, type(exc).__name__, exc,
                )  # fmt: skip
                if have is not None:
                    table[key] = have
                continue
            table[key] = Served(key, saved.version, ranker)
        return table

    # -- choices ------------------------------------------------------------------

    async def after_choice(self, task: str | None, user: str | None) -> dict[str, Any]:
        """What a logged choice changed: when it made a refit due, the refit is asked for
        and waited for (at most ``WAIT_S`` seconds, without blocking the event loop).
        The ``learning`` object of the ``POST /v1/choices`` response. The choice is saved
        already: a log that cannot be read now is logged, and answered as "nothing changed"."""
        keys = self.keys(task, user)
        self._known.update(keys)
        updated, message = False, None
        try:
            due = await anyio.to_thread.run_sync(lambda: [k for k in keys if self.learner.due(k)])
        except Exception as exc:
            log.warning("nbest: learning: cannot tell whether a refit is due: %s: %s", type(exc).__name__, exc)
            due = []
        if due and self.running:
            current = self._next
            current.scopes.update(due)
            self._wake.set()
            with anyio.move_on_after(WAIT_S):
                await current.done.wait()
            outcome = next((current.outcomes[k] for k in keys if k in current.outcomes), None)
            if outcome is not None:
                updated, message = outcome.accepted, outcome.message
        served = self.pick({"task": task, "user": user})
        try:
            count, until = await anyio.to_thread.run_sync(
                lambda: (self.store.count(keys[0]), self.learner.next_refit_in(keys[0]))
            )
        except Exception as exc:
            log.warning("nbest: learning: cannot read the scope's progress: %s: %s", type(exc).__name__, exc)
            count, until = 0, 0
        return {"version": served.version, "updated": updated, "message": message, "choices": count, "next_refit_in": until}

    async def describe(self, task: str | None, user: str | None) -> dict[str, Any]:
        """``GET /v1/ranker``: the learner's account of the scope that ranks such a request."""
        served = self.pick({"task": task, "user": user})
        narrowest = self.keys(task, user)[0]

        def describe() -> dict[str, Any]:
            info = self.learner.describe(narrowest)
            if info["version"] != served.version:  # ranked by a wider scope than the learner looked at (user -> task)
                progress: dict[str, Any] = {
                    k: info[k] for k in ("scope", "choices_logged", "new_choices", "next_refit_in") if k in info
                }
                info = {**self.learner.describe(served.scope), **progress, "ranked_by": served.scope}
            return info

        return await anyio.to_thread.run_sync(describe)


def _new_choices(info: Mapping[str, Any], every: int) -> int:
    """New choices since the scope's last refit, from the learner's description."""
    if "new_choices" in info:
        return int(info["new_choices"] or 0)
    return max(0, every - int(info.get("next_refit_in", every) or 0))


def _label(value: str | None, param: str) -> str | None:
    if value is not None and len(value) > MAX_SCOPE_CHARS:
        raise ApiError(422, f"{param}: at most {MAX_SCOPE_CHARS} characters (got {len(value)})", param=param)
    return value


def fixed_weights(config: RankerConfig | None) -> list[dict[str, Any]]:
    """Each reranker's name, weight (on its normalised score, as the learner shows it)
    and what it measures, for a ranker that does not learn."""
    if config is None:
        return []
    weights = effective_weights(config)
    return [
        {
            "name": rc.reranker_name(),
            "weight": round(weights[rc.reranker_name()], 4),
            "meaning": meaning(rc, weights[rc.reranker_name()]),
        }
        for rc in config.rerankers
    ]


@router.get("/v1/ranker", summary="The ranker that ranks a request (learned weights, version, agreement)")
async def get_ranker(http: HttpRequest, task: str | None = None, user: str | None = None) -> dict[str, Any]:
    """With ``--learn``: the learned ranker of the scope a request of ``task`` and ``user``
    falls in (weights with their meaning, version, choices behind it, held-out agreement,
    refits kept out). Otherwise the fixed ranker's config and weights."""
    service = http.app.state.service  # a Service (which imports this module)
    task, user = _label(task, "task"), _label(user, "user")
    live: LiveRankers | None = service.learning
    if live is not None:
        return await live.describe(task, user)
    config = RankerConfig.of(service.orch.ranker)
    return {
        "learning": False,
        "version": None,
        "config": None if config is None else config.model_dump(mode="json"),
        "weights": fixed_weights(config),
    }
