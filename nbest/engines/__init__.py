"""Engines: what generates candidates (vLLM in-process; remote servers)."""

from __future__ import annotations

from nbest.engines.base import Engine, Health, HealthReporting, Startable
from nbest.engines.config import (
    ENGINES,
    EndpointConfig,
    EngineConfig,
    EnginesFile,
    OpenAIEngineConfig,
    VLLMEngineConfig,
    load_engines,
)
from nbest.engines.fleet import Endpoint
from nbest.engines.models import DEFAULT_MODEL, default_home, prepare_default_model, resolve_model
from nbest.engines.openai import OpenAIEngine
from nbest.engines.vllm import VLLMEngine

__all__ = [
    "DEFAULT_MODEL",
    "ENGINES",
    "Endpoint",
    "EndpointConfig",
    "Engine",
    "EngineConfig",
    "EnginesFile",
    "Health",
    "HealthReporting",
    "OpenAIEngine",
    "OpenAIEngineConfig",
    "Startable",
    "VLLMEngine",
    "VLLMEngineConfig",
    "default_home",
    "load_engines",
    "prepare_default_model",
    "resolve_model",
]
