"""A real uvicorn server on 127.0.0.1 in a background thread, for tests that
need a socket (SSE timing, disconnects, the browser)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from tests.scripted import Step


def by_index(steps: dict[int, Step], default: Step | None = None):  # type: ignore[no-untyped-def]
    """A ScriptedEngine ``respond`` that picks the step by candidate index (the request id's suffix)."""

    def respond(prompt, params, request_id):  # type: ignore[no-untyped-def]
        index = int(request_id.rsplit("-", 1)[1])
        return steps.get(index, default or Step(text=f"candidate {index}"))

    return respond


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` (lifespan on) on a free port; yield its base URL; stop and join on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the test server did not stop"
