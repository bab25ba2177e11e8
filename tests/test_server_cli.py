"""``nbest serve`` rejects bad options with one line and status 2, before any
model loads; it serves the engines of --endpoint as ``nbest run`` does."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from tests.fake_openai import MODEL, FakeFleet
from tests.serving import running

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-n", "0"], "--max-n: max_n: Input should be greater than or equal to 1"),
        (["--max-concurrent", "-1"], "--max-concurrent"),
        (["--strategy", "zigzag"], "unknown strategy"),
        (["--reranker", "nope"], "unknown reranker 'nope'"),
        (["--ranker", "/no/such/ranker.json"], "ranker config /no/such/ranker.json: No such file"),
        (["--port", "99999"], "Invalid value for '--port'"),
        (["--endpoint", "localhost:8000"], "endpoint 'localhost:8000': need an http(s) URL"),
        (["--endpoint", "http://h:1", "--endpoint", "http://h:1/v1"], "listed twice"),
        (["--engines", "/no/such/engines.yaml"], "engines file not found: /no/such/engines.yaml"),
        (["--engines", "e.yaml", "--model", "m"], "drop --endpoint/--model"),
        (["--model", "./no/such/folder"], "model: './no/such/folder' is neither an existing folder nor a Hugging Face id"),
    ],
)
def test_serve_rejects_bad_options(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbest.cli", "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def _fake_openai_server(fleet: FakeFleet, host: str) -> FastAPI:
    """A real HTTP server in front of the fake server ``host`` of ``fleet``."""
    app = FastAPI()

    @app.api_route("/v1/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: HttpRequest) -> Response:
        upstream = httpx.Request(request.method, f"http://{host}/v1/{path}", content=await request.body())
        reply = await fleet.handle(upstream)
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")

    return app


def _served_url(proc: subprocess.Popen[str], limit: float = 60) -> str:
    """The address uvicorn reports on stderr once it listens."""
    assert proc.stderr is not None
    deadline = time.monotonic() + limit
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return found.group(1)
    proc.kill()
    raise AssertionError("nbest serve did not start: " + "".join(seen))


def test_serve_on_an_endpoint_answers_nbest(tmp_path: Path) -> None:
    fleet = FakeFleet("a:8000")
    with running(_fake_openai_server(fleet, "a:8000")) as upstream:
        argv = [sys.executable, "-m", "nbest.cli", "serve", "--endpoint", f"{upstream}/v1", "--port", "0"]
        argv += ["--db", str(tmp_path / "prefs.db"), "--reranker", "vote"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = _served_url(proc)
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.get("/healthz").json() == {"status": "ok", "model": "nbest"}
                reply = client.post("/v1/nbest", json={"prompt": "hi", "n": 3, "params": {"seed": 7}})
                assert reply.status_code == 200, reply.text
                result = reply.json()
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    assert sorted(c["text"] for c in result["candidates"]) == ["a:8000 seed=7", "a:8000 seed=8", "a:8000 seed=9"]
    assert set(result["best"]["scores"]) == {"vote"}
    served = fleet["a:8000"].served
    assert len(served) == 3 and set(served) == {7, 8, 9}
    assert {body["model"] for body in fleet["a:8000"].bodies} == {MODEL}  # the one model the server serves
