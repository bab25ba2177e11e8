"""Engines: what generates candidates (vLLM in-process; remote servers)."""

from __future__ import annotations

from nbest.engines.base import Engine
from nbest.engines.models import DEFAULT_MODEL, default_home, prepare_default_model, resolve_model
from nbest.engines.vllm import VLLMEngine

__all__ = ["DEFAULT_MODEL", "Engine", "VLLMEngine", "default_home", "prepare_default_model", "resolve_model"]
