"""ASGI middleware in front of every route: API key, body size, concurrency.

The page at ``/`` also takes the key as ``?api_key=KEY`` (a browser cannot
send a header when it opens a page); the page then sends it as a header. It
reads a request's body once (refusing more than ``max_body_bytes`` with
413), checks the API key (401; ``/healthz`` is open), and admits at most
``max_concurrent`` generation requests at once (429 with Retry-After). A
streaming response counts as in flight until its last event is sent.
Messages after the body (``http.disconnect``) pass through, so a handler still
learns that its client went away.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from nbest.server.errors import error_body
from nbest.server.metrics import Metrics
from nbest.server.settings import ServerSettings

__all__ = ["GENERATION_ROUTES", "Guard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATION_ROUTES = frozenset({"/v1/nbest", "/v1/nbest/stream", "/v1/chat/completions", "/v1/completions"})
_OPEN_ROUTES = frozenset({"/healthz"})


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
