"""Engine configs, their registry, and the engines file.

Every kind of engine registers a config class on :data:`ENGINES` (a
:class:`~nbest.registry.Registry`); the config validates the settings and
:meth:`EngineConfig.build` makes the engine. Built in:

========  ==========================  ==========================================
kind      short form                  engine
========  ==========================  ==========================================
vllm      ``vllm[:MODEL]``            :class:`~nbest.engines.vllm.VLLMEngine` (vLLM in this process;
                                      no MODEL: the embedded default)
openai    ``openai:URL[,URL...]``     :class:`~nbest.engines.openai.OpenAIEngine` (a fleet of
                                      OpenAI-compatible servers)
========  ==========================  ==========================================

Third parties add kinds through the ``nbest.engines`` entry-point group (see
:mod:`nbest.registry`); the command line loads them before it reads an
engines file.

An engines file (YAML, JSON or TOML) names each engine; the names are the
routes strategies send candidates to (``CandidateSpec.engine``). An entry is a
config mapping or a short form::

    engines:
      local:
        kind: vllm                      # VLLMEngine in this process
        model: smollm2-135m-instruct    # omitted: the embedded default
        args: {max_model_len: 2048}     # AsyncEngineArgs, passed through
      fleet:
        kind: openai                    # OpenAIEngine over a fleet of servers
        model: Qwen/Qwen2.5-7B-Instruct
        endpoints:
          - http://10.0.0.1:8000/v1
          - {url: http://10.0.0.2:8000/v1, weight: 2, max_concurrency: 32}
        api_key_env: FLEET_API_KEY      # read from the environment the caller passes
      spare: "openai:http://10.0.0.3:8000/v1"

>>> engines = build_engines(EnginesFile.parse({"engines": {"r": "openai:http://h:8000"}}))
>>> engines["r"].endpoints[0].url
'http://h:8000/v1'
>>> ENGINES.build("vllm:Qwen/Qwen2.5-0.5B-Instruct").model_dump()
{'kind': 'vllm', 'model': 'Qwen/Qwen2.5-0.5B-Instruct', 'args': {}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SerializeAsAny, field_validator

from nbest.engines.base import Engine
from nbest.engines.fleet import Endpoint
from nbest.engines.openai import OpenAIEngine
from nbest.engines.vllm import VLLMEngine
from nbest.errors import ConfigError
from nbest.registry import Registered, Registry, read_config_file
from nbest.types import NbestModel

__all__ = [
    "ENGINES",
    "EndpointConfig",
    "EngineConfig",
    "EnginesFile",
    "OpenAIEngineConfig",
    "VLLMEngineConfig",
    "build_engines",
    "engine_configs",
    "engines_from_options",
    "load_engines",
]


class EngineConfig(Registered):
    """Base of every engine config: validated settings that build one engine.

    A plugin subclasses it with ``kind: Literal["name"] = "name"``, its fields
    and :meth:`build`, and publishes the class in the ``nbest.engines``
    entry-point group.
    """

    def build(self, name: str, environ: Mapping[str, str]) -> Engine:
        """The engine (built, not started).

        Args:
            name: the engine's name, its route in an engines file; empty: the
                engine names itself (after its model).
            environ: where settings such as ``api_key_env`` are read.

        Raises:
            ConfigError: a setting the config alone could not check (a model
                folder that does not exist, an unset ``api_key_env`` ...).
        """
        raise NotImplementedError(f"{type(self).__name__} must define build(name, environ)")


ENGINES: Registry[EngineConfig] = Registry("engine", "nbest.engines", EngineConfig)
"""The engine kinds: ``vllm``, ``openai`` and the plugins loaded so far."""


@ENGINES.register("vllm")
class VLLMEngineConfig(EngineConfig):
    """A :class:`~nbest.engines.vllm.VLLMEngine` (vLLM in this process).

    Short form ``vllm[:MODEL]``.
    """

    short_help = "vllm[:MODEL]"

    kind: Literal["vllm"] = "vllm"
    model: str | None = None
    """Hugging Face id or folder; None: the embedded default model."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Engine arguments passed through to vLLM (tensor_parallel_size, dtype, max_model_len ...)."""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        return cls(model=arg or None)

    def build(self, name: str, environ: Mapping[str, str]) -> Engine:
        if self.model is None:
            return VLLMEngine.default(name=name or None, **self.args)
        return VLLMEngine(self.model, name=name or None, **self.args)


class EndpointConfig(NbestModel):
    """One server of a fleet."""

    url: str
    """Base URL, e.g. http://10.0.0.1:8000/v1."""
    weight: float = 1.0
    """Relative share of the load."""
    max_concurrency: int | None = None
    """Most requests in flight on it (None: the engine's max_concurrency)."""


@ENGINES.register("openai")
class OpenAIEngineConfig(EngineConfig):
    """An :class:`~nbest.engines.openai.OpenAIEngine` (OpenAI-compatible servers).

    Short form ``openai:URL[,URL...]`` (the servers' one model, no key; give a
    config mapping for the other settings).
    """

    short_help = "openai:URL[,URL...]"

    kind: Literal["openai"] = "openai"
    endpoints: list[str | EndpointConfig] = Field(min_length=1)
    """Base URLs, or endpoints with a weight and a cap."""
    model: str | None = None
    """The served model name; None: the one model the servers serve."""
    api_key: str | None = None
    """Bearer token (prefer api_key_env, which keeps it out of the file)."""
    api_key_env: str | None = None
    """Environment variable that holds the bearer token."""
    chat: bool = True
    """The servers offer /chat/completions."""
    request_timeout: float = Field(default=600.0, gt=0)
    """One candidate's whole deadline, in seconds (past it that candidate fails; no endpoint is blamed)."""
    read_timeout: float = Field(default=60.0, gt=0)
    """Seconds an endpoint may stay silent (no headers, no next token) before it counts as failed."""
    connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to connect, and to probe a down endpoint."""
    stream: bool = True
    """Ask for streamed answers (so read_timeout bounds each token, not a whole generation)."""
    max_attempts: int = Field(default=3, ge=1)
    """Endpoints a candidate is tried on before it fails."""
    max_concurrency: int = Field(default=64, ge=1)
    """Default per-endpoint cap on requests in flight."""
    max_strikes: int = Field(default=3, ge=1)
    """Wrong answers in a row (5xx, not an OpenAI response, no choices) that mark an endpoint down."""
    backoff: float = Field(default=0.5, gt=0)
    """First probe delay of a down endpoint (doubles per failure, jittered)."""
    max_backoff: float = Field(default=30.0, gt=0)
    """Longest probe delay."""
    down_timeout: float = Field(default=10.0, ge=0)
    """Seconds a request waits when every endpoint is down."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields added to every request body."""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        urls = [url.strip() for url in arg.split(",") if url.strip()]
        if not urls:
            raise ConfigError("openai: give the server URLs, openai:URL[,URL...]", parameter="endpoints", value=arg)
        return cls(endpoints=list(urls))

    def build(self, name: str, environ: Mapping[str, str]) -> Engine:
        api_key = self.api_key
        if self.api_key_env is not None:
            api_key = environ.get(self.api_key_env)
            if not api_key:
                raise ConfigError(f"api_key_env: {self.api_key_env} is not set", parameter="api_key_env", value=self.api_key_env)
        endpoints: list[str | Endpoint] = []
        for ep in self.endpoints:
            if isinstance(ep, str):
                endpoints.append(ep)
            else:
                endpoints.append(Endpoint(ep.url, weight=ep.weight, max_concurrency=ep.max_concurrency or self.max_concurrency))
        options = self.model_dump(exclude={"kind", "endpoints", "model", "api_key", "api_key_env"})
        return OpenAIEngine(endpoints, self.model, name=name or None, api_key=api_key, **options)


class EnginesFile(NbestModel):
    """The engines file: route name -> engine config (a mapping with a ``kind``,
    or a short form), validated through :data:`ENGINES`."""

    engines: dict[str, SerializeAsAny[EngineConfig]] = Field(min_length=1)
    """Engines by the name strategies route to."""

    @field_validator("engines", mode="before")
    @classmethod
    def _by_kind(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # pydantic says what a dictionary is
        configs: dict[str, EngineConfig] = {}
        for name, item in value.items():
            if isinstance(item, str) and item.strip().startswith("@"):
                message = f"{name}: {item.strip()!r}: give a config mapping or a short form here, not @FILE"
                raise ConfigError(message, parameter=str(name), value=item)
            try:
                configs[name] = ENGINES.build(item, files=False)
            except ConfigError as exc:
                # pydantic puts "engines." in front
                if exc.parameter and str(exc).startswith(f"{exc.parameter}:"):
                    raise ConfigError(f"{name}.{exc}", parameter=f"{name}.{exc.parameter}", value=exc.value) from None
                raise ConfigError(f"{name}: {exc}", parameter=str(name), value=exc.value) from None
        return configs


def build_engines(config: EnginesFile, environ: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """Build (not start) every engine of ``config``; ``environ`` resolves ``api_key_env``.

    Raises:
        ConfigError: a bad URL or setting, an unset ``api_key_env``, or a
            plugin that built something else than an Engine (named as
            ``engines.NAME...``).
    """
    engines: dict[str, Engine] = {}
    for name, item in config.engines.items():
        try:
            engine = item.build(name, environ or {})
        except ConfigError as exc:
            raise ConfigError(f"engines.{name}: {exc}", parameter=f"engines.{name}.{exc.parameter}", value=exc.value) from None
        if not isinstance(engine, Engine):
            raise ConfigError(
                f"engines.{name}: kind {item.kind!r} built a {type(engine).__name__}, not an Engine "
                "(needs name, generate, abort, aclose)",
                parameter=f"engines.{name}",
            )
        engines[name] = engine
    return engines


def load_engines(path: str | Path, environ: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """Read an engines file (.yaml/.yml, .json, .toml) and build its engines.

    Plugin kinds must be registered first (``ENGINES.load_plugins()``; the
    command line does it).

    Raises:
        ConfigError: a missing or unreadable file, an unknown suffix, or an
            invalid config (the message names the file and the field).
    """
    data = read_config_file(Path(path), "engines")
    try:
        return build_engines(EnginesFile.parse(data), environ)
    except ConfigError as exc:
        raise ConfigError(f"engines file {path}: {exc}", parameter=exc.parameter, value=exc.value) from None


def engine_configs(
    model: str | None,
    endpoints: Sequence[str] = (),
    engines_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    engine_args: Mapping[str, Any] | None = None,
) -> EnginesFile:
    """The engine configs the command line asks for, by route, as data: those of
    ``--engines FILE`` (plugin kinds loaded first), or ``{"default": ...}``: an
    ``openai`` engine over ``--endpoint URL`` (repeatable; ``OPENAI_API_KEY``
    from ``environ`` is the bearer token), or the ``vllm`` engine of
    ``--model`` (with ``engine_args``, e.g. ``--compile``'s ``enforce_eager=False``).

    >>> engine_configs(None).engines["default"].model_dump()
    {'kind': 'vllm', 'model': None, 'args': {}}

    Raises:
        ConfigError: conflicting options, a bad URL or engines file, a plugin
            that does not load.
    """
    environ = environ or {}
    if engine_args and (engines_file is not None or endpoints):
        raise ConfigError(
            "--compile/--eager: only for the in-process engine (--model); in an engines file set args: "
            "{enforce_eager: false} (compiled), true (eager) or auto",
            parameter="compile",
        )
    if engines_file is not None:
        if endpoints or model is not None:
            raise ConfigError("--engines: the file names the engines; drop --endpoint/--model", parameter="engines")
        ENGINES.load_plugins()
        data = read_config_file(Path(engines_file), "engines")
        try:
            return EnginesFile.parse(data)
        except ConfigError as exc:
            raise ConfigError(f"engines file {engines_file}: {exc}", parameter=exc.parameter, value=exc.value) from None
    config: dict[str, Any] = {"kind": "vllm", "model": model, "args": dict(engine_args or {})}
    if endpoints:
        api_key = environ.get("OPENAI_API_KEY") or None
        config = {"kind": "openai", "endpoints": list(endpoints), "model": model, "api_key": api_key}
    return EnginesFile(engines={"default": ENGINES.build(config)})


def engines_from_options(
    model: str | None,
    endpoints: Sequence[str],
    engines_file: str | Path | None,
    environ: Mapping[str, str] | None = None,
    engine_args: Mapping[str, Any] | None = None,
) -> dict[str, Engine]:
    """The engines of :func:`engine_configs`, built.

    Raises:
        ConfigError: conflicting options, a bad URL or engines file, a plugin
            that does not load.
    """
    configs = engine_configs(model, endpoints, engines_file, environ, engine_args)
    try:
        return build_engines(configs, environ)
    except ConfigError as exc:
        if engines_file is None:
            raise
        raise ConfigError(f"engines file {engines_file}: {exc}", parameter=exc.parameter, value=exc.value) from None
