"""A fake fleet of OpenAI-compatible servers behind one ``httpx.MockTransport``.

Each host (``a:8000``, ``b:8000`` ...) is a :class:`FakeServer` whose
behaviour a test sets (``down``, ``delay``, ``status``, ``reply``, ``models``);
every completion it finished is kept in ``served`` (by seed), requests
cancelled under it are counted in ``cancelled``. Like vLLM, it streams
server-sent events when the body asks for ``stream`` (``json_only`` answers
one JSON body anyway, as a server that does not stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import uvicorn

MODEL = "fake-model"


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``predicate()`` holds; ``timeout`` only guards against a hang."""
    with anyio.fail_after(timeout):
        # polls state that a fake server or the probe changes
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@dataclass
class FakeServer:
    host: str
    delay: float = 0.0
    down: bool = False
    status: int = 200
    fail_after_delay: bool = False
    """Drop the connection at the end of ``delay`` (a server that dies mid-request)."""
    reply: str = "ok"
    """``ok``; fast but wrong: ``not_json`` (an HTML page with 200), ``no_choices``
    (200 with an empty ``choices``); ``black_hole`` (never answers)."""
    json_only: bool = False
    """Answer one JSON body even when asked to stream."""
    token_delay: float = 0.0
    """Seconds between streamed tokens."""
    cut_after: int | None = None
    """Drop the connection after this many streamed events (a server that dies mid-answer)."""
    streams_closed: int = 0
    """Streamed answers the client closed before their last event (vLLM aborts such a request)."""
    models: list[str] = field(default_factory=lambda: [MODEL])
    served: list[int | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    bodies: list[dict[str, object]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}/v1"


class FakeFleet:
    def __init__(self, *hosts: str) -> None:
        self.servers = {host: FakeServer(host) for host in hosts}
        self.transport = httpx.MockTransport(self.handle)

    def __getitem__(self, host: str) -> FakeServer:
        return self.servers[host]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers.values()]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        server = self.servers[request.url.netloc.decode()]
        if server.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
        body = json.loads(request.content)
        server.bodies.append(body)
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            await anyio.sleep(server.delay)
            if server.reply == "black_hole":
                await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            server.cancelled += 1
            raise
        finally:
            server.in_flight -= 1
        if server.down or server.fail_after_delay:
            raise httpx.ReadError("connection reset by peer", request=request)
        if server.status != 200:
            return httpx.Response(server.status, json={"error": {"message": f"{server.host} says {server.status}"}})
        if body.get("model") not in server.models:
            return httpx.Response(404, json={"error": {"message": f"model {body.get('model')} does not exist"}})
        if server.reply == "not_json":
            return httpx.Response(200, text="<html><body>Welcome to nginx!</body></html>")
        if server.reply == "no_choices":
            return httpx.Response(200, json={"object": "text_completion", "choices": []})
        seed = body.get("seed")
        server.served.append(seed)
        text = f"{server.host} seed={seed}"
        tokens = text.split(" ")
        lps = [-0.5] * len(tokens)
        usage = {"prompt_tokens": 7, "completion_tokens": len(tokens)}
        if request.url.path == "/v1/chat/completions":
            content = [
                {
                    "token": t,
                    "logprob": lp,
                    "top_logprobs": [{"token": "alt", "logprob": -3.0}] * int(body.get("top_logprobs") or 0),
                }
                for t, lp in zip(tokens, lps, strict=True)
            ]
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": {"content": content}}
            if body.get("stream") and not server.json_only:
                chunks = [
                    {"index": 0, "delta": {"content": piece}, "logprobs": {"content": [item]}}
                    for piece, item in zip(_pieces(tokens), content, strict=True)
                ]
                return _stream(server, chunks, "stop", usage)
            return httpx.Response(200, json={"choices": [{**choice, "finish_reason": "stop"}], "usage": usage})
        top = [{"alt": -3.0} for _ in tokens] if body.get("logprobs") else [{t: lp} for t, lp in zip(tokens, lps, strict=True)]
        logprobs = {"tokens": tokens, "token_logprobs": lps, "top_logprobs": top}
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}
        if body.get("stream") and not server.json_only:
            chunks = [
                {"index": 0, "text": piece, "logprobs": {"tokens": [t], "token_logprobs": [lp], "top_logprobs": [alts]}}
                for piece, t, lp, alts in zip(_pieces(tokens), tokens, lps, top, strict=True)
            ]
            return _stream(server, chunks, "length", usage)
        return httpx.Response(200, json={"choices": [choice], "usage": usage})


def _pieces(tokens: list[str]) -> list[str]:
    """The streamed text of each token (a space before all but the first)."""
    return [t if i == 0 else f" {t}" for i, t in enumerate(tokens)]


def _stream(server: FakeServer, chunks: list[dict[str, object]], finish: str, usage: dict[str, int]) -> httpx.Response:
    """Server-sent events as vLLM sends them: a chunk per token, the finish reason
    on the last, a usage chunk, ``[DONE]``."""

    last = len(chunks) - 1
    events = [
        f"data: {json.dumps({'choices': [{**c, 'finish_reason': finish if i == last else None}]})}\n\n"
        for i, c in enumerate(chunks)
    ]
    events += [f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n", "data: [DONE]\n\n"]
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    if not server.token_delay and server.cut_after is None:  # all at once: readable as .content, as a plain JSON answer is
        return httpx.Response(200, headers=headers, content="".join(events).encode())
    return httpx.Response(200, headers=headers, stream=_Paced(server, events, last))


class _Paced(httpx.AsyncByteStream):
    """Events sent ``token_delay`` apart; closing it early counts in ``streams_closed``
    (as closing the connection tells a real server to stop)."""

    def __init__(self, server: FakeServer, events: list[str], last: int) -> None:
        self.server, self.events, self.last = server, events, last
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, event in enumerate(self.events):
            if self.server.cut_after is not None and i >= self.server.cut_after:
                raise httpx.ReadError("connection reset by peer")
            if 0 < i <= self.last:
                await anyio.sleep(self.server.token_delay)
            self.sent = i + 1
            yield event.encode()

    async def aclose(self) -> None:
        if self.sent < len(self.events):
            self.server.streams_closed += 1
            self.sent = len(self.events)


Message = MutableMapping[str, Any]


def asgi_app(
    fleet: FakeFleet, host: str
) -> Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]:
    """``fleet[host]`` as an ASGI app, to serve over a real socket."""

    async def app(scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = httpx.Request(scope["method"], f"http://{host}{scope['path']}", content=body)
        response = await fleet.handle(request)
        headers = [
            (k.encode(), v.encode()) for k, v in response.headers.items() if k not in ("content-length", "transfer-encoding")
        ]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        try:
            await send({"type": "http.response.body", "body": response.content, "more_body": True})
        except httpx.ResponseNotRead:  # a stream of events
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@contextlib.asynccontextmanager
async def serve(fleet: FakeFleet, host: str) -> AsyncIterator[int]:
    """Serve ``fleet[host]`` on a free loopback port (yielded) with uvicorn, on this event loop."""
    config = uvicorn.Config(asgi_app(fleet, host), host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                            timeout_graceful_shutdown=2)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done())
        if task.done():
            task.result()
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task
