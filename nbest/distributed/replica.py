"""What a replica needs to build its orchestrator, and the one way to build it.

A replica (an actor of ``nbest batch --ray``, a Ray Data stage) runs on another
process, often another machine: it gets a :class:`ReplicaSpec` (plain,
JSON-serialisable data) and builds its :class:`~nbest.orchestrator.Orchestrator`
with :func:`build_orchestrator`, the same way the command line builds one
from its options::

    >>> spec = ReplicaSpec(engines=engine_configs(None, ["http://h:8000"]), rerankers=["logprob"], max_in_flight=16)
    >>> orch = build_orchestrator(spec)          # built, not started
    >>> sorted(orch.engines), orch.ranker.rerankers[0].name
    (['default'], 'mean_logprob')
    >>> ReplicaSpec.parse(spec.model_dump(mode="json")) == spec
    True

Engines come from their registry configs (:data:`~nbest.engines.config.ENGINES`,
as ``--model``, ``--endpoint`` and ``--engines FILE`` make them), or, for tests
and custom engines, from ``engine_factory``: a ``"module:callable"`` import
path, called in the replica with the spec, returning the engines by route.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from nbest.engines.base import Engine
from nbest.engines.config import EnginesFile, build_engines, engine_configs
from nbest.errors import ConfigError
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.stopping import StoppingRule
from nbest.rerankers.ranker import Ranker
from nbest.rerankers.registry import build_ranker
from nbest.strategies.base import STRATEGIES, Strategy
from nbest.types import NbestModel

__all__ = ["ReplicaSpec", "build_orchestrator", "engine_configs", "load_factory", "run_options"]


class ReplicaSpec(NbestModel):
    """Everything a replica builds its orchestrator from (JSON-serialisable)."""

    engines: EnginesFile | None = None
    """The engines by route, as registry configs (``--model``/``--endpoint``/``--engines FILE``;
    see :func:`engine_configs`). None: ``engine_factory`` builds them."""
    engine_factory: str | None = None
    """``"module:callable"``, for tests and custom engines: called in the replica with
    this spec, returns the engines by route (``dict[str, Engine]``) or one engine; used
    instead of ``engines``. The module must be importable where the replica runs."""
    environ: dict[str, str] = Field(default_factory=dict)
    """Environment the engine configs read (``api_key_env`` variables), taken where the spec is made."""
    strategy: dict[str, Any] | str | None = None
    """The strategy config (a mapping with a ``kind``, or a short form); None: ``Fixed``."""
    rerankers: list[dict[str, Any] | str] = Field(default_factory=list)
    """Reranker configs or short forms (``NAME[:ARG][=WEIGHT]``); empty: mean log-probability."""
    eval_plan: bool = False
    """Plan requests marked as an item's greedy baseline with ``Fixed`` (``nbest eval --greedy``;
    :class:`~nbest.evaluation.evaluate.EvalPlan`)."""
    max_in_flight: int = Field(default=64, ge=1)
    """Candidates generating at once in the replica."""
    concurrency: int = Field(default=8, ge=1)
    """Prompts in progress at once in the replica."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds before a prompt's unfinished candidates are dropped."""
    until: str | None = None
    """A stopping rule (``beta:0.95``...), as ``--until`` takes it."""
    wave: int | None = Field(default=None, ge=1)
    """Candidates per wave with ``until``."""
    prune: str | None = Field(default=None, max_length=64)
    """A pruning policy (``KEEP[:WARMUP[:WINDOW]]``), as ``--prune`` takes it
    (:func:`~nbest.orchestrator.pruning.parse_prune`)."""
    diversity: bool = False
    """Fill ``Result.diversity``."""

    @field_validator("engine_factory")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None:
            module, sep, name = value.partition(":")
            if not sep or not module.strip() or not name.strip():
                raise ValueError(f"{value!r}: give an import path, module:callable")
        return value

    def check(self) -> None:
        """Reject a spec with no engines, or with a bad stopping rule or pruning policy.

        Raises:
            ConfigError: naming the field.
        """
        if (self.engines is None) == (self.engine_factory is None):
            raise ConfigError("replica: give exactly one of engines or engine_factory", parameter="engines")
        run_options(self)


def environ_for(engines: EnginesFile, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` the engine configs read (their ``api_key_env``)."""
    names = {getattr(c, "api_key_env", None) for c in engines.engines.values()}
    return {name: environ[name] for name in names if isinstance(name, str) and name in environ}


def load_factory(path: str) -> Any:
    """The callable named by ``"module:callable"`` (dots after the colon reach attributes).

    Raises:
        ConfigError: the module does not import or has no such callable.
    """
    module_name, _, name = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name.strip())
        for part in name.strip().split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"engine_factory: cannot load {path!r} ({exc})", parameter="engine_factory", value=path) from None
    if not callable(target):
        raise ConfigError(f"engine_factory: {path!r} is not callable", parameter="engine_factory", value=path)
    return target


def _engines(spec: ReplicaSpec) -> dict[str, Engine]:
    if spec.engine_factory is not None:
        made = load_factory(spec.engine_factory)(spec)
        engines = {"default": made} if isinstance(made, Engine) else made
        if not isinstance(engines, Mapping) or not engines or not all(isinstance(e, Engine) for e in engines.values()):
            raise ConfigError(
                f"engine_factory: {spec.engine_factory!r} must return engines by route, not {type(made).__name__}",
                parameter="engine_factory",
            )
        return dict(engines)
    assert spec.engines is not None  # check() made sure
    return build_engines(spec.engines, {**os.environ, **spec.environ})


def run_options(spec: ReplicaSpec) -> dict[str, Any]:
    """The keywords of :meth:`Orchestrator.run` the spec sets (stopping rule, waves,
    pruning policy, diversity).

    Raises:
        ConfigError: a bad stopping rule or pruning policy, or ``wave`` without a rule.
    """
    from nbest.orchestrator import stopping
    from nbest.orchestrator.adaptive import check_adaptive
    from nbest.orchestrator.pruning import parse_prune

    until: StoppingRule | None = None
    wave = spec.wave
    if spec.until is not None:
        until = stopping.parse_rule(spec.until, name="until")  # the spec's field, not the CLI flag
        wave = check_adaptive(until, wave)
    elif wave is not None:
        raise ConfigError("wave: only used with a stopping rule (until)", parameter="wave", value=wave)
    prune = parse_prune(spec.prune) if spec.prune is not None else None
    return {"until": until, "wave": wave, "prune": prune, "diversity": spec.diversity}


def build_orchestrator(spec: ReplicaSpec) -> Orchestrator:
    """The orchestrator a replica runs, built (engines not started: enter it, or
    call its engines' ``start``, as for any :class:`Orchestrator`). Plugins are
    loaded first, so plugin kinds build here as on the command line.

    Raises:
        ConfigError: no engines, a bad engine, strategy or reranker config, an
            engine factory that cannot be loaded or returns no engines.
    """
    from nbest.plugins import load_plugins

    spec.check()
    load_plugins()
    engines = _engines(spec)
    strategy: Strategy | None = STRATEGIES.build(spec.strategy) if spec.strategy is not None else None
    if spec.eval_plan:
        from nbest.evaluation.evaluate import EvalPlan
        from nbest.strategies.fixed import Fixed

        strategy = EvalPlan(strategy or Fixed())
    ranker: Ranker | None = None
    if spec.rerankers:
        ranker = build_ranker(spec.rerankers, engine=next(iter(engines.values())))
    return Orchestrator(engines, strategy=strategy, rerankers=ranker, max_in_flight=spec.max_in_flight, timeout=spec.timeout)
