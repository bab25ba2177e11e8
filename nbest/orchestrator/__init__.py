"""Fan-out, streaming, limits, cancellation, batches over many prompts."""

from __future__ import annotations

from nbest.orchestrator import stopping
from nbest.orchestrator.core import Orchestrator, SamplingKwargs
from nbest.orchestrator.fanout import fan_out
from nbest.orchestrator.pruning import Prune, parse_prune

__all__ = ["Orchestrator", "Prune", "SamplingKwargs", "fan_out", "parse_prune", "stopping"]
