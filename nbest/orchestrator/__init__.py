"""Fan-out, streaming, limits, cancellation, batches over many prompts."""

from __future__ import annotations

from nbest.orchestrator import stopping
from nbest.orchestrator.core import Orchestrator, SamplingKwargs
from nbest.orchestrator.fanout import fan_out

__all__ = ["Orchestrator", "SamplingKwargs", "fan_out", "stopping"]
