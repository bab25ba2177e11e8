"""The Strategy protocol, the registry of built-in strategies, and config loading.

A strategy turns a :class:`~nbest.types.Request` into ``request.n``
:class:`~nbest.types.CandidateSpec` s. Built-in strategies are pydantic models
with a ``kind`` field, registered under that kind, so a plan can be written in
a config file, loaded with :func:`from_config` and printed back with
``model_dump()``. Strategies that hold other strategies (``inner``, mixture
components, composite parts) declare them as :data:`NestedStrategy`, which
loads a nested config by its ``kind`` too, so the whole tree round-trips::

    >>> from nbest.strategies import PromptVariants, TemperatureLadder
    >>> plan = PromptVariants(["Be brief."], TemperatureLadder(0.2, 1.0))
    >>> from_config(plan.model_dump()) == plan
    True

Seeds: candidate ``i`` gets seed ``request.params.seed + i`` (None when the
request has no seed); strategies that draw at random seed their generator from
the request seed, so the same request always gives the same plan.

Bounded work: a strategy's size is capped wherever it is built (Python, CLI,
config files, HTTP), so planning stays cheap whatever a config says: nested
strategies at most :data:`MAX_DEPTH` deep, at most :data:`MAX_ITEMS` entries in
any list (grid axis values, mixture components, composite parts, variants,
route engines), weights finite, and a rendered prompt at most
:data:`MAX_RENDERED_CHARS` characters.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Annotated, Any, Protocol, Self, TypeVar, runtime_checkable

from pydantic import BeforeValidator, SerializeAsAny, ValidationError

from nbest.errors import ConfigError
from nbest.registry import Registered, Registry, read_config_file
from nbest.types import CandidateSpec, NbestModel, Request, SamplingParams, config_error

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_RENDERED_CHARS",
    "STRATEGIES",
    "NestedStrategy",
    "SamplingStrategy",
    "Strategy",
    "StrategyConfig",
    "check_items",
    "check_nesting",
    "check_weights",
    "derive",
    "from_config",
    "inner_plan",
    "load_config",
    "overrides",
    "place",
    "positional",
    "register",
    "registered",
    "rendered_chars_allowed",
    "rendered_limit",
    "seed_for",
    "seeded_rng",
    "short_number",
    "spec_label",
    "sub_request",
]


@runtime_checkable
class Strategy(Protocol):
    """Decides engine, prompt variant and sampling settings of every candidate.

    ``plan`` must be deterministic given the request (its seed included) and
    return exactly ``request.n`` specs, indexed 0 .. n-1.
    """

    def plan(self, request: Request) -> list[CandidateSpec]: ...


class StrategyConfig(Registered):
    """Base of the built-in strategies: a validated config with a ``kind``,
    registered on :data:`STRATEGIES` (with its ``--strategy`` short form)."""

    def plan(self, request: Request) -> list[CandidateSpec]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> Self:
        """Load a strategy from a config mapping or a YAML/JSON/TOML file.

        Called on a concrete class, the config must be of that kind.

        Raises:
            ConfigError: unknown kind, wrong kind, bad field, unreadable file.
        """
        strategy = from_config(data)
        if not isinstance(strategy, cls):
            raise ConfigError(
                f"kind: expected {cls.registry_kind!r}, got {strategy.kind!r}", parameter="kind", value=strategy.kind
            )
        return strategy


class SamplingStrategy(StrategyConfig):
    """Base of the strategies that set sampling parameters themselves (no inner strategy)."""

    engine: str = "default"
    """The engine (route) every candidate goes to."""


MAX_DEPTH = 8
"""Deepest nesting of strategies (``mixture`` of ``route`` of ``prompt_variants`` ... counts each level)."""

MAX_ITEMS = 64
"""Most entries in any list of a strategy: grid axis values, mixture components,
composite parts, prompt variants, route engines."""

MAX_RENDERED_CHARS = 1_000_000
"""Longest prompt a strategy may render for one candidate (a ``{prompt}``
variant repeats the request's prompt); a server sets a lower one with :func:`rendered_limit`."""

_RENDERED_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("nbest_rendered_limit", default=MAX_RENDERED_CHARS)


@contextlib.contextmanager
def rendered_limit(chars: int) -> Iterator[None]:
    """Plans made inside refuse (ConfigError) a prompt variant that would render
    more than ``chars`` characters, before building it.

    >>> from nbest.strategies import PromptVariants
    >>> from nbest.types import Request
    >>> with rendered_limit(100):
    ...     PromptVariants([{"text": "{prompt} " * 20, "role": "prompt"}]).plan(Request(prompt="x" * 10, n=1))
    Traceback (most recent call last):
    ...
    nbest.errors.ConfigError: variants: a variant renders a prompt of 220 characters; at most 100
    """
    token = _RENDERED_LIMIT.set(min(chars, MAX_RENDERED_CHARS))
    try:
        yield
    finally:
        _RENDERED_LIMIT.reset(token)


def rendered_chars_allowed() -> int:
    """The longest prompt a variant may render here (see :func:`rendered_limit`)."""
    return _RENDERED_LIMIT.get()


STRATEGIES: Registry[StrategyConfig] = Registry("strategy", "nbest.strategies", StrategyConfig)
"""Every strategy kind; third parties add theirs through the ``nbest.strategies`` entry-point group."""

S = TypeVar("S", bound=type[StrategyConfig])


def register(kind: str, *, aliases: Sequence[str] = ()) -> Callable[[S], S]:
    """Class decorator: make a strategy loadable from config under ``kind``."""

    def decorate(cls: S) -> S:
        STRATEGIES.add(kind, cls, aliases=aliases)
        return cls

    return decorate


def registered() -> dict[str, type[StrategyConfig]]:
    """The registered strategy kinds and their classes."""
    return STRATEGIES.kinds()


def from_config(data: Mapping[str, Any] | str | os.PathLike[str]) -> StrategyConfig:
    """Build a strategy from its config mapping (``{"kind": "fixed", ...}``)
    or from a YAML, JSON or TOML file holding one. Nested strategies load by
    their own ``kind``.

    Raises:
        ConfigError: unknown ``kind`` (the message lists the known ones), a bad
            field (named with its path, e.g. ``components.1.strategy.top_p``),
            or a file that is missing or unreadable.

    >>> from_config({"kind": "fixed"}).kind
    'fixed'
    """
    if isinstance(data, (str, os.PathLike)):
        data = load_config(Path(data))
    return STRATEGIES.from_config(data)


def load_config(path: Path) -> dict[str, Any]:
    """Read a strategy config file: ``.yaml``/``.yml``, ``.json`` or ``.toml``.

    Raises:
        ConfigError: the file is missing, has another suffix, does not parse,
            or does not hold a mapping.
    """
    return read_config_file(path, "strategy")


_LOADING_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("nbest_strategy_depth", default=0)


def _nested(value: Any) -> Any:
    if isinstance(value, StrategyConfig):
        return value
    if isinstance(value, Mapping):
        level = _LOADING_DEPTH.get() + 1
        if level >= MAX_DEPTH:  # refused before the deeper levels are even read
            raise ConfigError(f"strategy: nested more than {MAX_DEPTH} levels deep", parameter="strategy")
        token = _LOADING_DEPTH.set(level)
        try:
            return from_config(value)
        finally:
            _LOADING_DEPTH.reset(token)
    if isinstance(value, str) and value in STRATEGIES.kinds():
        return from_config({"kind": value})
    raise ValueError(f"a strategy is a kind name or a mapping with a 'kind' (one of {STRATEGIES.known()})")


NestedStrategy = Annotated[SerializeAsAny[StrategyConfig], BeforeValidator(_nested)]
"""A field holding a strategy: accepts a built-in strategy or its config
mapping (loaded by ``kind``); ``model_dump()`` writes the full config back."""


# -- helpers for writing strategies ---------------------------------------------


def derive(params: SamplingParams, **update: Any) -> SamplingParams:
    """``params`` with ``update`` applied, validated (``model_copy`` is not).

    Raises:
        ConfigError: the result is invalid (e.g. a temperature below 0.01).
    """
    if not update:
        return params
    try:
        return SamplingParams.model_validate({**params.model_dump(), **update})
    except ValidationError as exc:
        raise config_error(exc) from None


def overrides(model: NbestModel, names: Sequence[str]) -> dict[str, Any]:
    """The sampling fields among ``names`` that ``model`` sets (not None),
    checked against :class:`~nbest.types.SamplingParams`' rules.

    Raises:
        ConfigError: naming the first invalid field.
    """
    values = {name: getattr(model, name) for name in names if getattr(model, name) is not None}
    derive(SamplingParams(), **values)
    return values


def seed_for(params: SamplingParams, i: int) -> int | None:
    """Candidate ``i``'s seed: ``params.seed + i``, or None without a seed."""
    return None if params.seed is None else params.seed + i


def sub_request(request: Request, n: int, offset: int) -> Request:
    """The part of ``request`` an inner strategy plans: ``n`` candidates whose
    seeds start at ``seed + offset``."""
    seed = request.params.seed
    params = request.params if seed is None else request.params.model_copy(update={"seed": seed + offset})
    return request.model_copy(update={"n": n, "params": params})


def inner_plan(strategy: Strategy, request: Request) -> list[CandidateSpec]:
    """``strategy``'s plan for ``request``, sorted by index and checked.

    Raises:
        ConfigError: the plan's indices are not 0 .. n-1.
    """
    specs = sorted(strategy.plan(request), key=lambda s: s.index)
    if [s.index for s in specs] != list(range(request.n)):
        name = getattr(strategy, "kind", type(strategy).__name__)
        raise ConfigError(
            f"strategy {name} planned indices {[s.index for s in specs]} for n={request.n}; need 0..{request.n - 1}",
            parameter="strategy",
        )
    return specs


def place(spec: CandidateSpec, index: int, base_seed: int | None, label: str) -> CandidateSpec:
    """Move an inner strategy's spec to ``index`` of the outer plan, with seed
    ``base_seed + index`` (kept None when the inner spec has none) and ``label``."""
    params = spec.params
    if params.seed is not None and base_seed is not None:
        params = params.model_copy(update={"seed": base_seed + index})
    return spec.model_copy(update={"index": index, "params": params, "strategy": label})


def seeded_rng(request: Request, salt: str) -> random.Random:
    """A random generator seeded from the request seed and ``salt`` (the same
    request gives the same draws; a request without a seed still plans
    deterministically)."""
    return random.Random(f"nbest.{salt}:{request.params.seed}")


def check_weights(weights: Sequence[float], field: str) -> list[float]:
    """Weights must be finite, non-negative and sum to a positive, finite number.

    >>> check_weights([1e308, 1e308], "weights")
    Traceback (most recent call last):
    ...
    nbest.errors.ConfigError: weights: weights must be >= 0 and sum to a positive number, a finite one (got [1e+308, 1e+308])

    Raises:
        ConfigError: naming ``field``.
    """
    values = list(weights)
    if not values:
        raise ConfigError(f"{field}: give at least one weight", parameter=field, value=values)
    check_items(values, field)
    total = sum(values) if all(math.isfinite(w) for w in values) else math.inf  # 1e308 + 1e308 is inf
    if any(not w >= 0 for w in values) or not 0 < total < math.inf:
        raise ConfigError(
            f"{field}: weights must be >= 0 and sum to a positive number, a finite one (got {values})",
            parameter=field,
            value=values,
        )
    return values


def check_items(values: Sized, field: str) -> None:
    """At most :data:`MAX_ITEMS` entries in a strategy's list.

    Raises:
        ConfigError: naming ``field`` and the cap.
    """
    if len(values) > MAX_ITEMS:
        raise ConfigError(f"{field}: at most {MAX_ITEMS} entries (got {len(values)})", parameter=field)


def depth(strategy: Any) -> int:
    """How deep strategies nest in ``strategy`` (1: it holds none)."""
    children: list[Any] = []
    for name in ("inner",):
        if isinstance(getattr(strategy, name, None), StrategyConfig):
            children.append(getattr(strategy, name))
    for name in ("components", "parts"):
        children += [item.strategy for item in getattr(strategy, name, None) or ()]
    return 1 + max((depth(child) for child in children), default=0)


def check_nesting(strategy: StrategyConfig) -> None:
    """Strategies nest at most :data:`MAX_DEPTH` levels deep.

    Raises:
        ConfigError: deeper than the cap.
    """
    if depth(strategy) > MAX_DEPTH:
        raise ConfigError(f"strategy: nested more than {MAX_DEPTH} levels deep", parameter="strategy")


def positional(data: dict[str, Any], **given: Any) -> dict[str, Any]:
    """Merge positional constructor arguments (those not None) into ``data``.

    Raises:
        TypeError: an argument given both ways.
    """
    for name, value in given.items():
        if value is None:
            continue
        if name in data:
            raise TypeError(f"{name} given both positionally and by keyword")
        data[name] = value
    return data


def short_number(text: str, raw: str, example: str, kind: Callable[[str], Any] = float) -> Any:
    """A number inside a short form (``ladder:0.2-1.2``), or a ConfigError showing ``example``."""
    try:
        return kind(raw.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{raw.strip()!r} is not {what}; e.g. {example}", parameter="strategy", value=text) from None


def spec_label(value: float) -> str:
    """A number as it appears in spec labels: ``0.6`` -> ``"0.60"``, ``40`` -> ``"40"``."""
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def checked_plan(strategy: Strategy, request: Request) -> list[CandidateSpec]:
    """``strategy.plan(request)``, sorted by index, after checking it plans
    exactly the candidates 0 .. n-1.

    Raises:
        ConfigError: the plan's size or indices are wrong.
    """
    specs = strategy.plan(request)
    if sorted(s.index for s in specs) != list(range(request.n)):
        raise ConfigError(
            f"strategy {type(strategy).__name__} planned indices {[s.index for s in specs]} for n={request.n}; "
            f"need 0..{request.n - 1}",
            parameter="strategy",
        )
    return sorted(specs, key=lambda s: s.index)
