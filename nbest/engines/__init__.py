"""Engines: what generates candidates (vLLM in-process; remote servers)."""

from __future__ import annotations

from nbest.engines.base import Engine
from nbest.engines.config import EnginesFile, load_engines
from nbest.engines.fleet import Endpoint
from nbest.engines.models import DEFAULT_MODEL, default_home, prepare_default_model, resolve_model
from nbest.engines.openai import OpenAIEngine
from nbest.engines.vllm import VLLMEngine

__all__ = [
    "DEFAULT_MODEL",
    "Endpoint",
    "Engine",
    "EnginesFile",
    "OpenAIEngine",
    "VLLMEngine",
    "default_home",
    "load_engines",
    "prepare_default_model",
    "resolve_model",
]
