"""Server-Sent Events that stop when the client goes away.

:class:`EventStream` sends the events of an async iterator and, at the same
time, listens for ``http.disconnect``: when the client disconnects the
iteration is cancelled at once (not at the next write), so the generator's
``finally`` runs and aborts the engine requests behind it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["EventStream", "format_event"]


def format_event(data: Any, event: str | None = None) -> bytes:
    """One SSE event; ``data`` is sent as JSON unless it is already a string.

    >>> format_event({"a": 1}, "candidate")
    b'event: candidate\\ndata: {"a": 1}\\n\\n'
    """
    text = data if isinstance(data, str) else json.dumps(data)
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in text.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


class EventStream(Response):
    """An ASGI response streaming ``events`` (already formatted) as text/event-stream."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], status_code: int = 200) -> None:
        super().__init__(status_code=status_code)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            try:
                async for chunk in self.events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                aclose = getattr(self.events, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await stream()
