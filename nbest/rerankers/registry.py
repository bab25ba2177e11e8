"""The reranker registry: every reranker kind, its config, its short form, one builder.

A reranker kind is a config class registered on :data:`RERANKERS`, next to
the reranker it builds (``nbest/rerankers/vote.py`` holds ``MajorityVote``
and ``VoteConfig``). Every surface builds rerankers through
:func:`reranker_config` / :func:`build_ranker`:

- Python: ``build_ranker(["vote:number", {"kind": "logprob", "weight": 0.5}])``
- CLI: ``--reranker vote:number=2`` (``NAME[:ARG][=WEIGHT]``)
- HTTP: ``"rerankers": ["vote", {"kind": "mbr", "utility": "bleu"}]``, checked
  with ``for_client=True`` (only kinds whose config says it is safe for clients)
- files: a :class:`RankerConfig` (``nbest prefs fit`` writes one; ``nbest serve --ranker``)

A config round-trips: ``reranker_config(cfg.model_dump()) == cfg``, and a
built-in reranker gives its config back with ``to_config()``.

>>> cfg = reranker_config("vote:number=2")
>>> cfg.model_dump()
{'kind': 'vote', 'weight': 2.0, 'extract': 'number', 'votes': 'uniform'}
>>> reranker_config(cfg.model_dump()) == cfg
True
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import Field, SerializeAsAny, field_validator

from nbest.errors import ConfigError
from nbest.registry import Registered, Registry, read_config_file
from nbest.rerankers.base import Reranker
from nbest.rerankers.ranker import Normalize, Ranker
from nbest.types import CandidateUpdate, NbestModel, Prompt, SamplingParams

__all__ = [
    "RERANKERS",
    "Generator",
    "RankerConfig",
    "RerankerConfig",
    "RerankerSpec",
    "build_ranker",
    "config_for_name",
    "config_of",
    "parse_spec",
    "reranker_config",
]


@runtime_checkable
class Generator(Protocol):
    """What a reranker that asks a model (a judge) needs: any nbest engine fits."""

    def generate(self, prompt: Prompt, params: SamplingParams, request_id: str) -> AsyncIterator[CandidateUpdate]: ...


class RerankerConfig(Registered):
    """Base of every reranker kind's config: the kind, its weight in the Ranker, its options."""

    weight: float = Field(default=1.0, ge=0.0)
    """This reranker's weight in the Ranker's weighted sum."""

    client_safe: ClassVar[bool] = False
    """Whether a network client may ask for this kind (see :meth:`safe_for_clients`)."""
    reranker: ClassVar[Callable[..., Reranker] | None] = None
    """The reranker class the default :meth:`build` calls with the config's options as
    keyword arguments (None: the kind overrides :meth:`build`)."""

    def safe_for_clients(self) -> bool:
        """May a network client ask for this config? Never when it names a file
        or model on the server, or costs unbounded work; third-party kinds
        are refused unless they say so."""
        return self.client_safe

    def reranker_name(self) -> str:
        """The name the built reranker will have (its key in ``Candidate.scores``), without
        building it: the reranker class's ``name`` attribute, else the kind."""
        name = getattr(self.reranker, "name", None)
        return name if isinstance(name, str) else self.registry_kind

    def build(self, *, engine: Generator | None = None) -> Reranker:
        """The reranker: by default ``reranker(**options)``. ``engine`` serves kinds that ask a model (the judge).

        Raises:
            ConfigError: a bad option, a missing model or package, no engine for a judge.
        """
        if self.reranker is None:
            raise NotImplementedError(f"{type(self).__name__}: set `reranker` or override build()")
        return self.reranker(**self.model_dump(exclude={"kind", "weight"}))


RERANKERS: Registry[RerankerConfig] = Registry("reranker", "nbest.rerankers", RerankerConfig)
"""Every reranker kind; third parties add theirs through the ``nbest.rerankers`` entry-point group."""

RerankerSpec = RerankerConfig | Mapping[str, Any] | str
"""A reranker as its config, a config mapping, or a short form ``NAME[:ARG][=WEIGHT]``."""


def reranker_config(spec: RerankerSpec, *, files: bool = True) -> RerankerConfig:
    """The config of one reranker, from a config, a mapping, or a short form
    ``NAME[:ARG][=WEIGHT]`` (a trailing ``=NUMBER`` is the weight).

    Raises:
        ConfigError: unknown kind (the message lists the short forms), bad
            option, bad weight.
    """
    if isinstance(spec, str):
        text = spec.strip()
        body, sep, weight_text = text.rpartition("=")
        if sep and not text.startswith(("{", "@")):
            try:
                weight = float(weight_text)
            except ValueError:
                try:  # an argument that holds "=" (feature:model=ID)
                    return RERANKERS.build(text, files=files)
                except ConfigError:
                    pass
                raise ConfigError(f"reranker {text!r}: weight must be a number", parameter="reranker", value=text) from None
            config = _with_prefix(lambda: RERANKERS.build(body, files=files), text)
            return _with_prefix(lambda: config.parse({**config.model_dump(), "weight": weight}), text)
        return _with_prefix(lambda: RERANKERS.build(text, files=files), text)
    return RERANKERS.build(spec, files=files)


def _with_prefix(build: Callable[[], RerankerConfig], text: str) -> RerankerConfig:
    try:
        return build()
    except ConfigError as exc:
        if str(exc).startswith(("reranker ", "unknown reranker")):
            raise
        raise ConfigError(f"reranker {text!r}: {exc}", parameter=exc.parameter or "reranker", value=exc.value) from None


def parse_spec(text: RerankerSpec, *, engine: Generator | None = None) -> tuple[Reranker, float]:
    """One reranker and its weight, built from a short form or config.

    >>> r, w = parse_spec("logprob=2")
    >>> r.name, w
    ('mean_logprob', 2.0)

    Raises:
        ConfigError: as :func:`reranker_config`; ``judge`` without an engine.
    """
    config = reranker_config(text)
    return config.build(engine=engine), config.weight


def build_ranker(
    specs: Sequence[RerankerSpec],
    *,
    engine: Generator | None = None,
    for_client: bool = False,
    normalize: Normalize = "auto",
    temperature: float = 1.0,
    cache: dict[str, Reranker] | None = None,
) -> Ranker:
    """The one builder of rankers, for every surface.

    ``for_client=True`` is for input from the network: only kinds whose config
    is :meth:`~RerankerConfig.safe_for_clients`, and no ``@FILE``. ``cache``
    maps a config's canonical JSON (weight left out) to a reranker built
    earlier, so a server loads each model once however it is spelled.

    Raises:
        ConfigError: no reranker, a bad or unsafe one (named by its position),
            two with the same name.
    """
    if not specs:
        raise ConfigError("rerankers: give at least one reranker", parameter="rerankers")
    built: list[Reranker] = []
    weights: list[float] = []
    configs: list[RerankerConfig] = []
    for i, spec in enumerate(specs):
        config = reranker_config(spec, files=not for_client)
        configs.append(config)
        if for_client and not config.safe_for_clients():
            safe = ", ".join(k for k, cls in sorted(RERANKERS.kinds().items()) if cls.client_safe)
            raise ConfigError(
                f"rerankers[{i}]: reranker {config.registry_kind!r} with these options is not offered to clients; "
                f"allowed kinds: {safe} (without model names)",
                parameter=f"rerankers[{i}]",
            )
        key = json.dumps(config.model_dump(mode="json", exclude={"weight"}), sort_keys=True)
        reranker = cache.get(key) if cache is not None else None
        if reranker is None:
            reranker = config.build(engine=engine)
            if cache is not None:
                cache[key] = reranker
        built.append(reranker)
        weights.append(config.weight)
    return Ranker(built, weights=weights, normalize=normalize, temperature=temperature, configs=configs)


def config_for_name(name: str) -> RerankerConfig | None:
    """The default config of the kind whose rerankers carry ``name`` (``"mbr_chrf"`` ->
    ``mbr``), or None (no such kind, or one that needs options, like a model).

    >>> config_for_name("mean_logprob")
    MeanLogProbConfig(kind='logprob', weight=1.0)
    """
    for cls in RERANKERS.kinds().values():
        try:
            config = cls.from_short("")
        except ConfigError:
            continue
        if config.reranker_name() == name:
            return config
    return None


def config_of(reranker: Reranker, weight: float = 1.0) -> RerankerConfig | None:
    """The config that rebuilds ``reranker`` (with ``weight``), or None when it has none
    (a reranker built with a callable, or a third-party one without ``to_config``)."""
    to_config = getattr(reranker, "to_config", None)
    if to_config is None:
        return None
    try:
        config = to_config()
    except ConfigError:
        return None
    if not isinstance(config, RerankerConfig):
        return None
    return config.parse({**config.model_dump(), "weight": weight})


class RankerConfig(NbestModel):
    """A ranker as data: its rerankers' configs (with weights), normalisation and temperature.

    >>> config = RankerConfig(rerankers=["vote:number=2", "logprob"])
    >>> [r.model_dump() for r in config.rerankers][0]
    {'kind': 'vote', 'weight': 2.0, 'extract': 'number', 'votes': 'uniform'}
    >>> RankerConfig.parse(config.model_dump()) == config
    True
    """

    rerankers: list[SerializeAsAny[RerankerConfig]] = Field(min_length=1)
    """The rerankers: configs, config mappings or short forms ``NAME[:ARG][=WEIGHT]``."""
    normalize: Normalize = "zscore"
    """How each reranker's scores are normalised before weighting."""
    temperature: float = Field(default=1.0, gt=0)
    """Softmax temperature of the confidence."""

    @field_validator("rerankers", mode="before")
    @classmethod
    def _build(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [reranker_config(v) for v in value]

    def to_ranker(self, *, engine: Generator | None = None) -> Ranker:
        """Build the Ranker (loads any reranker models).

        Raises:
            ConfigError: a reranker that cannot be built.
        """
        return build_ranker(self.rerankers, engine=engine, normalize=self.normalize, temperature=self.temperature)

    @classmethod
    def of(cls, ranker: Ranker) -> RankerConfig | None:
        """The config of a ranker whose every reranker has one (else None)."""
        known = ranker.configs or [None] * len(ranker.rerankers)
        configs = [
            config_of(r, w) if c is None else c.parse({**c.model_dump(), "weight": w})
            for r, w, c in zip(ranker.rerankers, ranker.weights, known, strict=True)
        ]
        if any(c is None for c in configs):
            return None
        normalize = ranker.normalize
        return cls(rerankers=configs, normalize=normalize, temperature=ranker.temperature)

    @classmethod
    def load(cls, path: str | Path) -> RankerConfig:
        """Read a ranker config file (JSON, as ``nbest prefs fit`` writes; YAML and TOML too).

        Raises:
            ConfigError: missing file, bad syntax or fields.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ranker config {path}: No such file", parameter="ranker", value=str(path))
        data = read_config_file(path, "ranker")
        try:
            return cls.parse(data)
        except ConfigError as exc:
            raise ConfigError(f"ranker config {path}: {exc}", parameter=exc.parameter, value=exc.value) from None
