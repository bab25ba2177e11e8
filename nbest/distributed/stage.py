"""A Ray Data stage: N candidates for each row's prompt, ranked, as new columns.

For pipelines built on Ray Data (read, preprocess, generate, write): the stage
is a callable class, so Ray Data makes a pool of actors, each building one
replica (an :class:`~nbest.orchestrator.Orchestrator` and its engine, through
:func:`~nbest.distributed.replica.build_orchestrator`, as ``nbest batch --ray``
builds its replicas) once, and feeds it batches::

    import ray
    from nbest.distributed.stage import NBestStage

    ds = ray.data.read_json("questions.jsonl")              # a "prompt" column
    ds = ds.map_batches(
        NBestStage,
        fn_constructor_kwargs={"n": 8, "max_tokens": 256, "rerankers": ["vote:number"]},
        compute=ray.data.ActorPoolStrategy(size=4),         # four replicas (Ray < 2.51: concurrency=4)
        num_gpus=1,                                          # each with a GPU
        batch_size=32,
    )
    ds.write_parquet("answers/")

Each output row is its input row plus ``best_text``, ``confidence`` (the best
candidate's), ``answers`` and ``candidates`` (the Result's lists, as JSON
text), ``request_id`` and ``error``. A row whose prompt cannot be used, or
whose every candidate failed, gets its reason in ``error`` (and None in
``best_text`` and ``confidence``); the other rows of its batch are answered.
A dead engine fails the batch (Ray Data may retry it); the replica starts
new engines for the next batch.

The stage itself does not import Ray: called directly, it answers a batch
(a mapping of column name to array, as Ray Data's default batch format, or a
pandas DataFrame)::

    stage = NBestStage(n=4, max_tokens=64, rerankers=["vote:number"])   # the embedded model starts here
    out = stage({"prompt": np.array(["What is 2 + 2?", ""], dtype=object)})
    out["best_text"][0], out["error"][1]     # ('4', 'prompt: ...'): the empty prompt is refused, the other answered
    stage.close()
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import numpy as np
from anyio.from_thread import BlockingPortal

from nbest.distributed.replica import ReplicaSpec, build_orchestrator, engine_configs, run_options
from nbest.engines.config import ENGINES, EnginesFile
from nbest.errors import ConfigError, EngineDeadError
from nbest.orchestrator import Orchestrator
from nbest.types import Request, Result, SamplingParams

__all__ = ["OUTPUT_COLUMNS", "NBestStage", "stage_spec"]

OUTPUT_COLUMNS = ("best_text", "confidence", "answers", "candidates", "request_id", "error")
"""The columns the stage adds to every batch."""

_SPEC_KEYS = ("strategy", "rerankers", "max_in_flight", "concurrency", "timeout", "until", "wave", "diversity")
"""Friendly keywords that are :class:`ReplicaSpec` fields of the same name."""
_ENGINE_KEYS = ("model", "engine", "engines", "engine_factory")
"""Friendly keywords that name the engines (at most one)."""


def _named(parameter: str, error: ConfigError) -> ConfigError:
    """``error`` with its message starting with the argument it is about."""
    message = str(error)
    if not message.startswith((f"{parameter}:", f"{parameter}[", f"--{parameter}")):
        message = f"{parameter}: {message}"
    return ConfigError(message, parameter=parameter, value=error.value)


def _check_parts(fields: Mapping[str, Any]) -> None:
    """Build the strategy, the reranker configs and the stopping rule once, so that
    a bad one is named by its argument (``strategy: ...``, ``rerankers[1]: ...``)."""
    from nbest.orchestrator.stopping import parse_rule
    from nbest.plugins import load_plugins
    from nbest.rerankers.registry import reranker_config
    from nbest.strategies.base import STRATEGIES

    load_plugins()
    if fields.get("strategy") is not None:
        try:
            STRATEGIES.build(fields["strategy"])
        except ConfigError as exc:
            raise _named("strategy", exc) from None
    rerankers = fields.get("rerankers")
    if rerankers is not None:
        if isinstance(rerankers, str | Mapping) or not isinstance(rerankers, Sequence):
            raise ConfigError(f"rerankers: give a list of short forms or configs (got {rerankers!r})", parameter="rerankers")
        for i, one in enumerate(rerankers):
            try:
                reranker_config(one)
            except ConfigError as exc:
                raise _named(f"rerankers[{i}]", exc) from None
    if isinstance(fields.get("until"), str):
        parse_rule(fields["until"], name="until")


def _engines_of(key: str, value: Any) -> tuple[EnginesFile | None, str | None]:
    """The engine configs (or the engine factory) one friendly engine keyword names."""
    if key == "engine_factory":
        if not isinstance(value, str):
            raise ConfigError(f"engine_factory: give an import path, module:callable (got {value!r})", parameter="engine_factory")
        return None, value
    if key == "model":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"model: give a Hugging Face id or a folder (got {value!r})", parameter="model", value=value)
        return engine_configs(value), None
    if key == "engine":
        if not isinstance(value, str | Mapping):
            raise ConfigError(
                f"engine: give a short form (vllm[:MODEL], openai:URL[,URL...]) or a config mapping with a kind (got {value!r})",
                parameter="engine",
            )
        ENGINES.load_plugins()
        try:
            return EnginesFile(engines={"default": ENGINES.build(value)}), None
        except ConfigError as exc:
            raise _named("engine", exc) from None
    # engines: an engines file's path, or its content
    if not isinstance(value, str | Mapping):
        raise ConfigError(
            f"engines: give an engines file's path or a mapping of route to engine config (got {value!r})", parameter="engines"
        )
    try:
        if isinstance(value, str):
            return engine_configs(None, engines_file=value), None
        ENGINES.load_plugins()
        return EnginesFile.parse(value if "engines" in value else {"engines": dict(value)}), None
    except ConfigError as exc:
        raise _named("engines", exc) from None


def stage_spec(spec: ReplicaSpec | Mapping[str, Any] | None = None, **options: Any) -> ReplicaSpec:
    """The :class:`ReplicaSpec` of a stage: ``spec`` as given (a spec or its
    dict), or one made of the friendly keywords: the engines (at most one of
    ``model``, ``engine`` (a short form or config), ``engines`` (an engines
    file's path or content) and ``engine_factory``; none: the embedded
    default model) and the spec's fields ``strategy``, ``rerankers``,
    ``max_in_flight``, ``concurrency``, ``timeout``, ``until``, ``wave``,
    ``diversity``.

    >>> stage_spec(model="Qwen/Qwen2.5-0.5B-Instruct", rerankers=["vote:number"]).engines.engines["default"].model
    'Qwen/Qwen2.5-0.5B-Instruct'

    Raises:
        ConfigError: an unknown keyword, ``spec`` together with friendly
            keywords, two engine keywords, or a bad value (named).
    """
    unknown = sorted(set(options) - set(_SPEC_KEYS) - set(_ENGINE_KEYS))
    if unknown:
        allowed = ", ".join((*_ENGINE_KEYS, *_SPEC_KEYS))
        raise ConfigError(f"{unknown[0]}: not a replica setting; allowed: {allowed}", parameter=unknown[0])
    if spec is not None:
        if options:
            first = sorted(options)[0]
            raise ConfigError(f"{first}: give it inside spec, or drop spec and give the keywords alone", parameter=first)
        made = spec if isinstance(spec, ReplicaSpec) else None
        if made is None:
            if not isinstance(spec, Mapping):
                raise ConfigError(f"spec: give a ReplicaSpec or its dict (got {type(spec).__name__})", parameter="spec")
            made = ReplicaSpec.parse(dict(spec))
        _check_parts(made.model_dump())
        made.check()
        return made
    named = [k for k in _ENGINE_KEYS if options.get(k) is not None]
    if len(named) > 1:
        raise ConfigError(f"{named[1]}: give one of {', '.join(_ENGINE_KEYS)} (got {' and '.join(named)})", parameter=named[1])
    engines, factory = _engines_of(named[0], options[named[0]]) if named else (engine_configs(None), None)
    fields = {k: options[k] for k in _SPEC_KEYS if options.get(k) is not None}
    _check_parts(fields)
    made = ReplicaSpec(engines=engines, engine_factory=factory, **fields)
    made.check()
    return made


def _text(value: Any) -> Any:
    """A cell as plain Python (numpy scalars and arrays, nested)."""
    if isinstance(value, np.ndarray):
        return [_text(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


log = logging.getLogger("nbest.distributed")


class _Loop:
    """An asyncio event loop in a daemon thread, reached through an anyio portal.
    A daemon: a process that exits (a Ray worker retired without :meth:`NBestStage.close`)
    does not wait on it."""

    def __init__(self) -> None:
        handed: queue.Queue[BlockingPortal | BaseException] = queue.Queue(maxsize=1)

        async def serve() -> None:
            async with BlockingPortal() as portal:
                handed.put(portal)
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve, backend="asyncio")
            except BaseException as exc:  # the loop could not start: said in the constructor
                handed.put(exc)

        self.thread = threading.Thread(target=main, name="nbest-stage-loop", daemon=True)
        self.thread.start()
        got = handed.get()
        if isinstance(got, BaseException):
            raise got
        self.portal: BlockingPortal = got

    def stop(self) -> None:
        """Stop the loop (its tasks are done by then: the engines were closed first)."""
        if self.thread.is_alive():
            self.portal.call(self.portal.stop)
            self.thread.join()


class NBestStage:
    """A callable class for ``Dataset.map_batches``: one replica per actor,
    built once from its keyword arguments (see :func:`stage_spec`), plus:

    - ``n`` (default 8), ``system`` and any sampling setting
      (``temperature``, ``max_tokens``, ``seed``, ...: the fields of
      :class:`~nbest.types.SamplingParams`): the base request every row starts from;
    - ``prompt_column`` (default ``"prompt"``): text, or chat messages (a list
      of ``{"role", "content"}``);
    - ``id_column`` (default None): a column whose values become the
      requests' ids (``request_id``); None: a fresh id per row.

    Everything is checked, and the engines started, in the constructor: a bad
    argument raises :class:`~nbest.errors.ConfigError` naming it, before any
    model loads. The replica's requests run on one event loop, in a thread
    of the actor, for the actor's life; :meth:`close` (or garbage collection,
    which Ray Data triggers when it retires the actor) shuts the engines down.
    """

    def __init__(
        self,
        spec: ReplicaSpec | Mapping[str, Any] | None = None,
        *,
        n: int = 8,
        system: str | None = None,
        prompt_column: str = "prompt",
        id_column: str | None = None,
        **options: Any,
    ) -> None:
        self._portal: BlockingPortal | None = None
        self._closers = contextlib.ExitStack()
        self._engine_closer = contextlib.ExitStack()
        self._orch: Orchestrator | None = None
        for name, column in (("prompt_column", prompt_column), ("id_column", id_column)):
            if column is not None and (not isinstance(column, str) or not column):
                raise ConfigError(f"{name}: give a column name (got {column!r})", parameter=name, value=column)
        if id_column == prompt_column:
            raise ConfigError("id_column: must differ from prompt_column", parameter="id_column", value=id_column)
        sampling = {k: options.pop(k) for k in list(options) if k in SamplingParams.model_fields}
        self.spec = stage_spec(spec, **options)
        self.prompt_column = prompt_column
        self.id_column = id_column
        self._run_options = run_options(self.spec)
        orch = build_orchestrator(self.spec)
        self.base: Request = orch.request("(per row)", n, system=system, **sampling)
        self._checker = orch  # plans rows; never started
        loop = _Loop()
        self._closers.callback(loop.stop)
        self._portal = loop.portal
        self._closers.callback(self._stop_engines)
        self._start_engines(orch)

    # -- lifecycle -----------------------------------------------------------

    def _start_engines(self, orch: Orchestrator | None = None) -> Orchestrator:
        """Enter a replica's orchestrator (``orch``, or a new one built from the spec) on the portal's loop."""
        assert self._portal is not None
        orch = orch if orch is not None else build_orchestrator(self.spec)
        self._engine_closer.enter_context(self._portal.wrap_async_context_manager(orch))
        self._orch = orch
        return orch

    def _stop_engines(self) -> None:
        self._orch = None
        closer, self._engine_closer = self._engine_closer, contextlib.ExitStack()
        closer.close()

    def close(self, timeout: float = 120.0) -> None:
        """Shut the engines down and stop the event loop, waiting at most ``timeout``
        seconds (an engine that does not stop by then is left to the watchdog that
        ends its processes with this one). Idempotent."""
        self._portal = None
        closers, self._closers = self._closers, contextlib.ExitStack()
        if sys.is_finalizing():
            return  # no thread runs any more: the watchdog ends the engine's processes with this one

        def close() -> None:
            try:
                closers.close()
            except Exception as exc:
                log.warning("nbest: closing a stage's engines: %s: %s", type(exc).__name__, exc)

        # in a daemon thread: a loop already gone (the interpreter is exiting) cannot hold this one
        closing = threading.Thread(target=close, name="nbest-stage-close", daemon=True)
        closing.start()
        closing.join(timeout)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close(timeout=10.0)

    # -- a batch -------------------------------------------------------------

    def __call__(self, batch: Any) -> Any:
        """The batch with the output columns added (see the module docs).

        Raises:
            ConfigError: the prompt or id column is missing, or the batch
                already has an output column.
            EngineDeadError: the engine died (the batch can be retried: the
                next call starts new engines).
        """
        frame = None
        if not isinstance(batch, Mapping) and hasattr(batch, "to_dict") and hasattr(batch, "columns"):
            frame = type(batch)
            columns = {str(c): batch[c].to_numpy() for c in batch.columns}
        elif isinstance(batch, Mapping):
            columns = dict(batch)
        else:
            raise ConfigError(f"batch: expected a mapping of column to array or a DataFrame (got {type(batch).__name__})")
        for needed in (self.prompt_column, self.id_column):
            if needed is not None and needed not in columns:
                raise ConfigError(
                    f"{needed}: no such column in the batch (columns: {', '.join(map(str, columns)) or 'none'})",
                    parameter="prompt_column" if needed == self.prompt_column else "id_column",
                    value=needed,
                )
        clash = [c for c in OUTPUT_COLUMNS if c in columns]
        if clash:
            raise ConfigError(
                f"{clash[0]}: the batch already has this column, which the stage writes; rename it", parameter=clash[0]
            )
        prompts = columns[self.prompt_column]
        ids = columns[self.id_column] if self.id_column is not None else None
        size = len(prompts)
        errors: list[str | None] = [None] * size
        requests: dict[int, Request] = {}
        for i in range(size):
            try:
                requests[i] = self._request(prompts[i], None if ids is None else ids[i])
            except (ConfigError, ValueError, TypeError) as exc:
                errors[i] = str(exc) or type(exc).__name__
        results = self._run(requests)
        out: dict[str, list[Any]] = {name: [] for name in OUTPUT_COLUMNS}
        for i in range(size):
            result = results.get(i)
            error = errors[i]
            if result is not None and result.best is None:
                failed = next((c.error for c in result.candidates if c.error), None) or "no candidate"
                error = f"every candidate failed: {failed}"
            data = result.model_dump(mode="json") if result is not None else None
            out["best_text"].append(result.best.text if result is not None and result.best is not None else None)
            out["confidence"].append(result.best.confidence if result is not None and result.best is not None else None)
            out["answers"].append(json.dumps(data["answers"], ensure_ascii=False) if data is not None else None)
            out["candidates"].append(json.dumps(data["candidates"], ensure_ascii=False) if data is not None else None)
            out["request_id"].append(result.id if result is not None else None)
            out["error"].append(error)
        merged: dict[str, Any] = {**columns, **{name: np.array(values, dtype=object) for name, values in out.items()}}
        if frame is not None:
            return frame(merged)
        return merged

    def _request(self, prompt: Any, row_id: Any) -> Request:
        prompt = _text(prompt)
        if _missing(prompt):
            raise ConfigError(f"{self.prompt_column}: missing", parameter=self.prompt_column)
        update: dict[str, Any] = {"prompt": prompt}
        if row_id is not None:
            row_id = _text(row_id)
            if isinstance(row_id, bool) or not isinstance(row_id, str | int) or (isinstance(row_id, str) and not row_id.strip()):
                raise ConfigError(
                    f"{self.id_column}: give a non-empty text or an integer (got {row_id!r})", parameter=self.id_column
                )
            update["id"] = str(row_id)
        data = self.base.model_dump()
        data.pop("id")
        request = Request(**{**data, **update})
        self._checker.plan(request)  # the strategy accepts it (checked again when it runs)
        return request

    def _run(self, requests: dict[int, Request]) -> dict[int, Result]:
        if not requests:
            return {}
        portal = self._portal
        if portal is None:
            raise ConfigError("NBestStage: closed; make a new one")
        orch = self._orch if self._orch is not None else self._start_engines()  # after a dead engine: a new one
        positions = list(requests)
        batch = [requests[i] for i in positions]

        async def run() -> dict[int, Result]:
            found: dict[int, Result] = {}
            finished = orch.as_completed(batch, concurrency=self.spec.concurrency, **self._run_options)
            async with contextlib.aclosing(finished):
                async for k, result in finished:
                    found[positions[k]] = result
            return found

        try:
            return portal.call(run)
        except EngineDeadError:
            self._stop_engines()  # the batch fails (Ray Data may retry it); the next one starts new engines
            raise
