"""Load balancing and health for a fleet of OpenAI-compatible endpoints.

:class:`Fleet` hands out endpoints to requests: the healthy endpoint with the
fewest outstanding requests (relative to its weight) and below its concurrency
cap. An endpoint that fails is marked down; a probe checks it again after an
exponential backoff with jitter and marks it up once it answers. When every
endpoint is down, :meth:`Fleet.acquire` waits up to ``down_timeout`` seconds
for one to come back, then raises :class:`~nbest.errors.EngineDeadError`
naming every endpoint and its last error.

    >>> fleet = Fleet([Endpoint("http://127.0.0.1:8000/v1"), Endpoint("http://127.0.0.1:8001/v1", weight=2)])
    >>> fleet.pick().url
    'http://127.0.0.1:8001/v1'
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import anyio

from nbest.errors import ConfigError, EngineDeadError

__all__ = ["Endpoint", "Fleet", "normalise_url"]


def normalise_url(url: str) -> str:
    """An OpenAI-compatible base URL, ending in ``/v1`` (added when the path is empty).

    >>> normalise_url("http://127.0.0.1:8000")
    'http://127.0.0.1:8000/v1'

    Raises:
        ConfigError: not an http(s) URL with a host.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"endpoint {url!r}: {exc}", parameter="endpoint", value=url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"endpoint {url!r}: need an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1", parameter="endpoint", value=url
        )
    del port
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass
class Endpoint:
    """One OpenAI-compatible server and its live state."""

    url: str
    """Base URL (``http://host:port/v1``)."""
    weight: float = 1.0
    """Relative share of the load (2 takes twice the outstanding requests of 1)."""
    max_concurrency: int = 64
    """Most requests in flight on this endpoint at once."""
    in_flight: int = 0
    """Requests running on it now."""
    sent: int = 0
    """Requests handed to it so far."""
    failures: int = 0
    """Consecutive failures (reset when it is marked up)."""
    healthy: bool = True
    """False while marked down."""
    last_error: str | None = None
    """What went wrong last."""
    retry_at: float = 0.0
    """When (``time.monotonic``) the probe checks a down endpoint next."""
    served: list[str] = field(default_factory=list)
    """Model names the server reported, once probed."""

    def __post_init__(self) -> None:
        self.url = normalise_url(self.url)
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ConfigError(f"endpoint {self.url}: weight must be a positive number", parameter="weight", value=self.weight)
        if self.max_concurrency < 1:
            raise ConfigError(
                f"endpoint {self.url}: max_concurrency must be at least 1",
                parameter="max_concurrency",
                value=self.max_concurrency,
            )


class Fleet:
    """Picks endpoints for requests and tracks their health.

    Args:
        endpoints: the servers (at least one, distinct URLs).
        backoff: first delay (seconds) before a down endpoint is probed again;
            it doubles with each further failure, up to ``max_backoff``, times
            a random jitter in [0.5, 1].
        down_timeout: how long a request waits for an endpoint when all are down.
        name: the engine's name, for error messages.
    """

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        down_timeout: float = 10.0,
        name: str = "openai",
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("endpoints: give at least one URL", parameter="endpoints")
        urls = [e.url for e in endpoints]
        if len(set(urls)) != len(urls):
            raise ConfigError(f"endpoints: listed twice: {sorted({u for u in urls if urls.count(u) > 1})}", parameter="endpoints")
        if not backoff > 0 or max_backoff < backoff:
            raise ConfigError("backoff: need 0 < backoff <= max_backoff", parameter="backoff", value=backoff)
        if not down_timeout >= 0:
            raise ConfigError("down_timeout: must be >= 0 seconds", parameter="down_timeout", value=down_timeout)
        self.endpoints = endpoints
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.down_timeout = down_timeout
        self.name = name
        self._rng = rng or random.Random()
        self._changed: anyio.Event | None = None  # made on first wait: needs a running event loop

    # -- choosing ------------------------------------------------------------

    def pick(self) -> Endpoint | None:
        """The healthy endpoint below its cap with the least load per weight (None: none free)."""
        free = [e for e in self.endpoints if e.healthy and e.in_flight < e.max_concurrency]
        if not free:
            return None
        return min(free, key=lambda e: ((e.in_flight + 1) / e.weight, e.sent / e.weight))

    @property
    def all_down(self) -> bool:
        """True when no endpoint is healthy."""
        return not any(e.healthy for e in self.endpoints)

    def describe(self) -> str:
        """Every endpoint with its state and last error, for messages."""
        parts = []
        for e in self.endpoints:
            state = "up" if e.healthy else "down"
            parts.append(f"{e.url} ({state}: {e.last_error})" if e.last_error else f"{e.url} ({state})")
        return "; ".join(parts)

    def dead_error(self) -> EngineDeadError:
        """The error raised when no endpoint came back in time."""
        return EngineDeadError(
            f"engine {self.name}: all {len(self.endpoints)} endpoint(s) are down after waiting {self.down_timeout:g} s: "
            f"{self.describe()}",
            engine=self.name,
        )

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Endpoint]:
        """Hold an endpoint for one request; waits while all are busy.

        Raises:
            EngineDeadError: every endpoint stayed down for ``down_timeout`` s.
        """
        down_since: float | None = None
        while True:
            endpoint = self.pick()
            if endpoint is not None:
                break
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            if self.all_down:
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                left = down_since + self.down_timeout - now
                if left <= 0:
                    raise self.dead_error()
                with anyio.move_on_after(left):
                    await changed.wait()
            else:
                down_since = None
                await changed.wait()
        endpoint.in_flight += 1
        endpoint.sent += 1
        try:
            yield endpoint
        finally:
            endpoint.in_flight -= 1
            self._notify()

    # -- health --------------------------------------------------------------

    def mark_down(self, endpoint: Endpoint, error: str) -> None:
        """Take ``endpoint`` out of rotation; schedule its next probe."""
        endpoint.last_error = error
        # failures of requests already in flight when it went down do not lengthen the backoff
        if endpoint.healthy or time.monotonic() >= endpoint.retry_at:
            endpoint.failures += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (endpoint.failures - 1))
            endpoint.retry_at = time.monotonic() + delay * self._rng.uniform(0.5, 1.0)
        endpoint.healthy = False
        self._notify()

    def mark_up(self, endpoint: Endpoint) -> None:
        """Put ``endpoint`` back in rotation."""
        endpoint.healthy = True
        endpoint.failures = 0
        self._notify()

    def due(self) -> list[Endpoint]:
        """Down endpoints whose backoff has passed."""
        now = time.monotonic()
        return [e for e in self.endpoints if not e.healthy and e.retry_at <= now]

    def next_due_in(self, default: float) -> float:
        """Seconds until the next down endpoint is due (``default`` when none is down)."""
        down = [e.retry_at for e in self.endpoints if not e.healthy]
        return max(0.0, min(down) - time.monotonic()) if down else default

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()
