"""Load balancing and health for a fleet of OpenAI-compatible endpoints.

:class:`Fleet` hands out endpoints to requests: the healthy endpoint with the
fewest outstanding requests (relative to its weight) and below its concurrency
cap. An endpoint whose connection fails is marked down at once; one that
answers but wrongly (HTTP errors, bodies that are not OpenAI responses) is
marked down after ``max_strikes`` such answers in a row. A probe checks a down
endpoint again after an exponential backoff with jitter (capped at
``max_backoff`` however many failures came before) and marks it up once it
answers. An endpoint brought back after strikes is on probation: one request at
a time until a request succeeds on it, and its next strike takes it down again
with a longer backoff (the probe only proves that it answers). When every
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
from collections.abc import AsyncIterator, Collection
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
    """Consecutive times it was marked down (the backoff exponent); reset when a
    request succeeds on it, or when it is marked up off probation."""
    strikes: int = 0
    """Requests in a row that failed on it (reset when one succeeds)."""
    healthy: bool = True
    """False while marked down."""
    last_error: str | None = None
    """What went wrong last."""
    retry_at: float = 0.0
    """When (``time.monotonic``) the probe checks a down endpoint next."""
    served: list[str] = field(default_factory=list)
    """Model names the server reported, once probed."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise ConfigError(f"endpoint {self.url!r}: need a URL string", parameter="endpoint", value=self.url)
        self.url = normalise_url(self.url)
        weight: object = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (weight > 0 and math.isfinite(weight)):
            raise ConfigError(f"endpoint {self.url}: weight must be a positive number", parameter="weight", value=self.weight)
        concurrency: object = self.max_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(
                f"endpoint {self.url}: max_concurrency must be a whole number >= 1",
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
        max_strikes: failed requests in a row (wrong answers, HTTP errors) that
            mark an endpoint down.
        name: the engine's name, for error messages.
    """

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        down_timeout: float = 10.0,
        max_strikes: int = 3,
        name: str = "openai",
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("endpoints: give at least one URL", parameter="endpoints")
        urls = [e.url for e in endpoints]
        if len(set(urls)) != len(urls):
            raise ConfigError(f"endpoints: listed twice: {sorted({u for u in urls if urls.count(u) > 1})}", parameter="endpoints")
        for value, label in ((backoff, "backoff"), (max_backoff, "max_backoff"), (down_timeout, "down_timeout")):
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ConfigError(f"{label}: must be a number of seconds", parameter=label, value=value)
        if not (0 < backoff <= max_backoff and math.isfinite(max_backoff)):
            raise ConfigError("backoff: need 0 < backoff <= max_backoff, both finite", parameter="backoff", value=backoff)
        if not down_timeout >= 0:
            raise ConfigError("down_timeout: must be >= 0 seconds", parameter="down_timeout", value=down_timeout)
        if isinstance(max_strikes, bool) or not isinstance(max_strikes, int) or max_strikes < 1:
            raise ConfigError("max_strikes: must be an integer >= 1", parameter="max_strikes", value=max_strikes)
        self.endpoints = endpoints
        self.max_strikes = max_strikes
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.down_timeout = down_timeout
        self.name = name
        self._rng = rng or random.Random()
        self._changed: anyio.Event | None = None  # made on first wait: needs a running event loop

    # -- choosing ------------------------------------------------------------

    def on_probation(self, endpoint: Endpoint) -> bool:
        """True when ``endpoint`` is up but its last ``max_strikes`` requests failed."""
        return endpoint.strikes >= self.max_strikes

    def cap(self, endpoint: Endpoint) -> int:
        """Requests ``endpoint`` may hold now: 1 on probation, else its ``max_concurrency``."""
        return 1 if self.on_probation(endpoint) else endpoint.max_concurrency

    def pick(self, avoid: Collection[str] = (), *, insist: bool = False) -> Endpoint | None:
        """The healthy endpoint below its cap with the least load per weight (None: none free).

        Endpoints whose URL is in ``avoid`` (already tried for this request)
        are taken only when no other is free; with ``insist``, only when no
        other is healthy (None while the others are busy).
        """
        free = [e for e in self.endpoints if e.healthy and e.in_flight < self.cap(e)]
        fresh = [e for e in free if e.url not in avoid]
        if insist and not fresh and any(e.healthy and e.url not in avoid for e in self.endpoints):
            return None
        if not (fresh or free):
            return None
        return min(fresh or free, key=lambda e: ((e.in_flight + 1) / e.weight, e.sent / e.weight))

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
    async def acquire(self, avoid: Collection[str] = (), *, insist: bool = False) -> AsyncIterator[Endpoint]:
        """Hold an endpoint for one request; waits while all are busy. See
        :meth:`pick` for ``avoid``.

        Raises:
            EngineDeadError: every endpoint stayed down for ``down_timeout`` s.
        """
        down_since: float | None = None
        while True:
            endpoint = self.pick(avoid, insist=insist)
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
            delay = self.delay(endpoint.failures)
            endpoint.retry_at = time.monotonic() + delay * self._rng.uniform(0.5, 1.0)
        endpoint.healthy = False
        self._notify()

    def delay(self, failures: int) -> float:
        """The probe delay after ``failures`` failures in a row, before jitter:
        ``backoff * 2**(failures - 1)``, at most ``max_backoff`` (finite for any count).

        >>> Fleet([Endpoint("http://a/v1")], backoff=0.5, max_backoff=30).delay(10_000)
        30.0
        """
        exponent = min(max(failures - 1, 0), 64)  # 2**64 already exceeds any max_backoff / backoff
        return float(min(self.max_backoff, self.backoff * 2.0**exponent))

    def mark_up(self, endpoint: Endpoint) -> None:
        """Put ``endpoint`` back in rotation (on probation when it went down on strikes)."""
        endpoint.healthy = True
        if not self.on_probation(endpoint):
            endpoint.failures = 0
        self._notify()

    def strike(self, endpoint: Endpoint, error: str) -> bool:
        """Count a failed request on ``endpoint``; mark it down once it has
        ``max_strikes`` in a row (at once when on probation). Returns True when
        it went down now."""
        endpoint.strikes += 1
        endpoint.last_error = error
        if endpoint.healthy and endpoint.strikes >= self.max_strikes:
            self.mark_down(endpoint, error)
            return True
        return False

    def succeeded(self, endpoint: Endpoint) -> None:
        """A request succeeded on ``endpoint``: its strikes (and, when up, its failures) start over."""
        probation = self.on_probation(endpoint)
        endpoint.strikes = 0
        if endpoint.healthy:
            endpoint.failures = 0
        if probation:
            self._notify()  # off probation: its full cap is free

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
