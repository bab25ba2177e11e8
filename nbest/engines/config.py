"""An engines file: several named engines, local and remote, for routing.

A YAML, JSON or TOML file names each engine and its kind; the names are the
routes strategies send candidates to (``CandidateSpec.engine``)::

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

>>> engines = build_engines(EnginesFile.parse({"engines": {"r": {"kind": "openai", "endpoints": ["http://h:8000"]}}}))
>>> engines["r"].endpoints[0].url
'http://h:8000/v1'
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from nbest.engines.base import Engine
from nbest.engines.fleet import Endpoint
from nbest.engines.openai import OpenAIEngine
from nbest.engines.vllm import VLLMEngine
from nbest.errors import ConfigError
from nbest.types import NbestModel

__all__ = [
    "EndpointConfig",
    "EnginesFile",
    "OpenAIEngineConfig",
    "VLLMEngineConfig",
    "build_engines",
    "engines_from_options",
    "load_engines",
]


class VLLMEngineConfig(NbestModel):
    """A :class:`~nbest.engines.vllm.VLLMEngine` (vLLM in this process)."""

    kind: Literal["vllm"]
    model: str | None = None
    """Hugging Face id or folder; None: the embedded default model."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Engine arguments passed through to vLLM (tensor_parallel_size, dtype, max_model_len ...)."""


class EndpointConfig(NbestModel):
    """One server of a fleet."""

    url: str
    """Base URL, e.g. http://10.0.0.1:8000/v1."""
    weight: float = 1.0
    """Relative share of the load."""
    max_concurrency: int | None = None
    """Most requests in flight on it (None: the engine's max_concurrency)."""


class OpenAIEngineConfig(NbestModel):
    """An :class:`~nbest.engines.openai.OpenAIEngine` (OpenAI-compatible servers)."""

    kind: Literal["openai"]
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
    """Seconds one HTTP request may take before its endpoint counts as failed."""
    connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to connect, and to probe a down endpoint."""
    max_attempts: int = Field(default=3, ge=1)
    """Endpoints a candidate is tried on before it fails."""
    max_concurrency: int = Field(default=64, ge=1)
    """Default per-endpoint cap on requests in flight."""
    backoff: float = Field(default=0.5, gt=0)
    """First probe delay of a down endpoint (doubles per failure, jittered)."""
    max_backoff: float = Field(default=30.0, gt=0)
    """Longest probe delay."""
    down_timeout: float = Field(default=10.0, ge=0)
    """Seconds a request waits when every endpoint is down."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields added to every request body."""


EngineConfig = Annotated[VLLMEngineConfig | OpenAIEngineConfig, Field(discriminator="kind")]


class EnginesFile(NbestModel):
    """The engines file: route name -> engine config."""

    engines: dict[str, EngineConfig] = Field(min_length=1)
    """Engines by the name strategies route to."""


def build_engines(config: EnginesFile, environ: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """Build (not start) every engine of ``config``; ``environ`` resolves ``api_key_env``.

    Raises:
        ConfigError: a bad URL or setting, or an unset ``api_key_env`` (named
            as ``engines.NAME...``).
    """
    engines: dict[str, Engine] = {}
    for name, item in config.engines.items():
        try:
            engines[name] = _build(name, item, environ or {})
        except ConfigError as exc:
            raise ConfigError(f"engines.{name}: {exc}", parameter=f"engines.{name}.{exc.parameter}", value=exc.value) from None
    return engines


def _build(name: str, item: VLLMEngineConfig | OpenAIEngineConfig, environ: Mapping[str, str]) -> Engine:
    if isinstance(item, VLLMEngineConfig):
        if item.model is None:
            return VLLMEngine.default(name=name, **item.args)
        return VLLMEngine(item.model, name=name, **item.args)
    api_key = item.api_key
    if item.api_key_env is not None:
        api_key = environ.get(item.api_key_env)
        if not api_key:
            raise ConfigError(f"api_key_env: {item.api_key_env} is not set", parameter="api_key_env", value=item.api_key_env)
    endpoints: list[str | Endpoint] = []
    for ep in item.endpoints:
        if isinstance(ep, str):
            endpoints.append(ep)
        else:
            endpoints.append(Endpoint(ep.url, weight=ep.weight, max_concurrency=ep.max_concurrency or item.max_concurrency))
    return OpenAIEngine(
        endpoints,
        item.model,
        name=name,
        api_key=api_key,
        chat=item.chat,
        request_timeout=item.request_timeout,
        connect_timeout=item.connect_timeout,
        max_attempts=item.max_attempts,
        max_concurrency=item.max_concurrency,
        backoff=item.backoff,
        max_backoff=item.max_backoff,
        down_timeout=item.down_timeout,
        extra_body=item.extra_body,
    )


def load_engines(path: str | Path, environ: Mapping[str, str] | None = None) -> dict[str, Engine]:
    """Read an engines file (.yaml/.yml, .json, .toml) and build its engines.

    Raises:
        ConfigError: a missing or unreadable file, an unknown suffix, or an
            invalid config (the message names the file and the field).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".toml"):
        raise ConfigError(f"engines file {path}: use .yaml, .yml, .json or .toml", parameter="engines", value=str(path))
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"engines file {path}: {exc.strerror or exc}", parameter="engines", value=str(path)) from None
    try:
        if suffix == ".json":
            data: Any = json.loads(raw)
        elif suffix == ".toml":
            data = tomllib.loads(raw)
        else:
            data = yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"engines file {path}: not valid {suffix[1:]}: {exc}", parameter="engines", value=str(path)) from None
    try:
        return build_engines(EnginesFile.parse(data), environ)
    except ConfigError as exc:
        raise ConfigError(f"engines file {path}: {exc}", parameter=exc.parameter, value=exc.value) from None


def engines_from_options(
    model: str | None,
    endpoints: Sequence[str],
    engines_file: str | Path | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Engine]:
    """The engines the command line asks for, by route: those of ``--engines
    FILE``, or ``{"default": ...}``: an OpenAIEngine over ``--endpoint URL``
    (repeatable; ``OPENAI_API_KEY`` from ``environ`` is the bearer token), or
    the in-process vLLM engine for ``--model``.

    Raises:
        ConfigError: conflicting options, a bad URL or engines file.
    """
    environ = environ or {}
    if engines_file is not None:
        if endpoints or model is not None:
            raise ConfigError("--engines: the file names the engines; drop --endpoint/--model", parameter="engines")
        return load_engines(engines_file, environ)
    if endpoints:
        return {"default": OpenAIEngine(list(endpoints), model, api_key=environ.get("OPENAI_API_KEY") or None)}
    return {"default": VLLMEngine.default() if model is None else VLLMEngine(model)}
