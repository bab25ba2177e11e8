"""ASGI middleware in front of every route: host, origin, API key, body size
and type, concurrency.

It refuses a ``Host`` outside ``allowed_hosts`` (421: DNS rebinding) and a
POST from a browser page of another site (403: its ``Origin`` is neither this
server nor an allowed host). The page at ``/`` also takes the key as
``?api_key=KEY`` (a browser cannot send a header when it opens a page); the
page then sends it as a header, and :class:`RedactApiKey` keeps it out of the
access log. It reads a request's body once (refusing more than
``max_body_bytes`` with 413, and a POST that is not ``application/json`` with
415, which also stops cross-site form posts), checks the API key (401;
``/healthz`` is open), and admits at most
``max_concurrent`` generation requests at once (429 with Retry-After). A
streaming response counts as in flight until its last event is sent.
Messages after the body (``http.disconnect``) pass through, so a handler still
learns that its client went away.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nbest.server.errors import error_body
from nbest.server.metrics import Metrics
from nbest.server.settings import ServerSettings

__all__ = ["GENERATION_ROUTES", "LOOPBACK", "Guard", "RedactApiKey", "allowed_hosts_for", "host_allowed"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATION_ROUTES = frozenset({"/v1/nbest", "/v1/nbest/stream", "/v1/chat/completions", "/v1/completions"})
_OPEN_ROUTES = frozenset({"/healthz"})
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK = ("localhost", "127.0.0.1", "::1")
"""The names of this machine a local client uses."""


class Guard:
    """Wraps the app; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in GENERATION_ROUTES else "other"
        started = time.perf_counter()
        status_seen: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
            await send(message)

        try:
            await self._serve(scope, receive, send_counted, path)
        finally:
            if route != "other":
                self.metrics.requests.labels(route, str(status_seen[0] if status_seen else 499)).inc()
                self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        allowed = self.settings.allowed_hosts
        host = _header(scope, b"host") or ""
        if allowed is not None and path not in _OPEN_ROUTES and not host_allowed(_hostname(host), allowed):
            shown = host[:100] or "(none)"
            await _reply(send, 421, f"host: this server does not answer for {shown!r}; allowed: {', '.join(allowed)}", "host")
            return
        origin = _header(scope, b"origin")
        if origin is not None and scope["method"] in _UNSAFE and not _same_site(origin, host, allowed or ()):
            await _reply(
                send,
                403,
                f"origin: a request from the page {origin[:100]!r} is refused: only pages served by this server"
                " may post here (behind a proxy, allow its public name: nbest serve --allowed-host NAME)",
                "origin",
            )
            return
        key = self.settings.api_key
        if key is not None and path not in _OPEN_ROUTES and not _authorised(scope, key):
            await _reply(
                send,
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                "authorization",
                {"www-authenticate": "Bearer"},
            )
            return
        body = b""
        if scope["method"] in ("POST", "PUT", "PATCH"):
            limit = self.settings.max_body_bytes
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _reply(send, 413, f"request body too large: at most {limit} bytes (got {length})", "body")
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await _reply(send, 413, f"request body too large: at most {limit} bytes", "body")
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                await _reply(send, 415, f"content-type: send application/json (got {kind[:100] or 'none'!r})", "content-type")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if path not in GENERATION_ROUTES:
            await self.app(scope, replay, send)
            return
        if self.in_flight >= self.settings.max_concurrent:
            retry = str(self.settings.retry_after_s)
            await _reply(
                send,
                429,
                f"server busy: {self.in_flight} requests in progress; retry after {retry} s",
                None,
                {"retry-after": retry},
            )
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, replay, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _authorised(scope: Scope, key: str) -> bool:
    given = _header(scope, b"x-api-key")
    if scope["path"] == "/" and scope["method"] == "GET":  # a browser opening the page cannot send headers
        given = dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"))).get("api_key", given)
    auth = _header(scope, b"authorization")
    if auth is not None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


async def _reply(send: Send, status: int, message: str, param: str | None, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(error_body(status, message, param)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _hostname(netloc: str) -> str:
    """The name in a ``Host`` value, without port or IPv6 brackets.

    >>> [_hostname(h) for h in ("Example.com:8000", "[::1]:8000", "127.0.0.1", "")]
    ['example.com', '::1', '127.0.0.1', '']
    """
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc[1:]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def host_allowed(name: str, allowed: Sequence[str]) -> bool:
    """True when the host ``name`` is in ``allowed`` (``.example.com`` also allows its
    subdomains; ``*`` allows any).

    >>> host_allowed("api.example.com", [".example.com"]), host_allowed("evil.test", ["localhost"])
    (True, False)
    """
    if not name:
        return "*" in allowed
    for entry in allowed:
        entry = entry.strip().lower().strip("[]")
        if entry == "*" or name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _same_site(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """An ``Origin`` is accepted when it is this server (the same host and port as
    ``Host``, or a loopback name with the same port) or names another allowed host
    explicitly (not through ``*``).

    >>> _same_site("http://127.0.0.1:8000", "127.0.0.1:8000", ()), _same_site("https://evil.test", "127.0.0.1:8000", ())
    (True, False)
    """
    try:
        given, served = urlsplit(origin.strip()), urlsplit("//" + host.strip())
        default = {"http": 80, "https": 443}.get(given.scheme)
        if default is None or not given.hostname:
            return False  # "null": a sandboxed frame, a file, a redirect across sites
        same_port = (given.port or default) == (served.port or default)
        if given.hostname == served.hostname and same_port:
            return True
        if given.hostname in LOOPBACK:  # this machine by another name: only the same port is this server
            return same_port and served.hostname in LOOPBACK
    except ValueError:  # a port that is not a number
        return False
    return host_allowed(given.hostname, [entry for entry in allowed if entry != "*"])


def allowed_hosts_for(bind: str, extra: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The hosts a server bound to ``bind`` answers for: the loopback names and ``bind``
    itself, plus ``extra``; None (any host) for a wildcard bind (``0.0.0.0``, ``::``)
    without ``extra``, where the server cannot know the names it is reached by.

    >>> allowed_hosts_for("127.0.0.1")
    ('localhost', '127.0.0.1', '::1')
    >>> allowed_hosts_for("0.0.0.0") is None, allowed_hosts_for("0.0.0.0", ["nbest.example.com"])
    (True, ('localhost', '127.0.0.1', '::1', 'nbest.example.com'))
    """
    names = list(LOOPBACK)
    wildcard = bind.strip("[]") in ("0.0.0.0", "::", "")
    if not wildcard:
        names.append(bind.strip("[]").lower())
    if wildcard and not extra:
        return None
    names.extend(e.strip().lower() for e in extra)
    return tuple(dict.fromkeys(names))


_API_KEY = re.compile(r"(?i)(api_key=)[^&\s]*")


class RedactApiKey(logging.Filter):
    """Hides ``api_key=...`` in the paths of uvicorn's access log (the choice page's
    address carries the key). Install with
    ``logging.getLogger("uvicorn.access").addFilter(RedactApiKey())``.

    >>> args = ("1.2.3.4", "GET", "/?api_key=s3cret&x=1", "1.1", 200)
    >>> record = logging.LogRecord("uvicorn.access", 20, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    >>> RedactApiKey().filter(record), record.getMessage()
    (True, '1.2.3.4 - "GET /?api_key=REDACTED&x=1 HTTP/1.1" 200')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_API_KEY.sub(r"\1REDACTED", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _API_KEY.sub(r"\1REDACTED", record.msg)
        return True
