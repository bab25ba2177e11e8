"""Prometheus metrics of one app (its own registry: no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nbest.types import Candidate

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Requests, candidates, tokens, latencies, in-flight requests, engine health and restarts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nbest_requests", "HTTP requests served, by route and status.", ["route", "status"], registry=self.registry
        )
        self.candidates = Counter(
            "nbest_candidates", "Candidates generated, by outcome (ok or failed).", ["outcome"], registry=self.registry
        )
        self.tokens = Counter(
            "nbest_tokens", "Tokens processed, by kind (prompt or completion).", ["kind"], registry=self.registry
        )
        self.request_latency = Histogram(
            "nbest_request_latency_seconds",
            "Seconds to serve a request, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.candidate_latency = Histogram(
            "nbest_candidate_latency_seconds",
            "Seconds from sending a candidate to its last token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("nbest_in_flight_requests", "Generation requests being served now.", registry=self.registry)
        self.choices = Counter("nbest_choices", "Human choices recorded.", registry=self.registry)
        self.engine_restarts = Counter(
            "nbest_engine_restarts", "Times the server restarted an engine that died.", registry=self.registry
        )
        self.engine_up = Gauge(
            "nbest_engine_up", "1 while the engines can serve (what /healthz says), else 0.", registry=self.registry
        )

    def candidate(self, candidate: Candidate) -> None:
        """Count one finished candidate and its tokens."""
        self.candidates.labels("ok" if candidate.ok else "failed").inc()
        self.tokens.labels("completion").inc(candidate.num_tokens)
        self.tokens.labels("prompt").inc(candidate.prompt_tokens)
        if candidate.latency_s is not None:
            self.candidate_latency.observe(candidate.latency_s)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
