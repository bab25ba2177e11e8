"""``nbest serve`` rejects bad options with one line and status 2, before any
model loads; it serves the engines of --endpoint as ``nbest run`` does, and its
--until/--wave/--prune to every request that does not set its own."""

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

from nbest.cli import main
from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine
from tests.fake_openai import MODEL, FakeFleet
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index, running

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-n", "0"], "--max-n: Input should be greater than or equal to 1 (got 0)"),
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
        (["--until", "forever"], "--until 'forever': unknown stopping rule 'forever'; use beta:P"),
        (["--wave", "3"], "--wave: only used with a stopping rule"),
        (["--until", "esc:4", "--wave", "100"], "--wave: at most max_n = 64"),
        (["--prune", "2"], "--prune '2': prune.keep: must be a share in (0, 1]"),
        (["--prune", "0.9", "--max-top-logprobs", "2"], "max_top_logprobs is 2: raise it to at least 5"),
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


class FinalOnly(ScriptedEngine):
    """An engine that reports only final outputs (no token updates): it cannot be pruned."""

    token_updates = False


def test_serve_prune_on_an_engine_without_token_updates_exits_2_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", never)
    with pytest.raises(SystemExit) as info:
        main(["serve", "--db", str(tmp_path / "p.db"), "--prune", "low"], engine_factory=lambda _: {"default": FinalOnly()})
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("nbest: error: --prune: route 'default'"), err
    assert "cannot report tokens as they are generated" in err


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        ("--until", "beta:0." + "9" * 10_240, "--until: at most 64 characters for a stopping rule (got 10247 characters)"),
        ("--prune", "0." + "9" * 10_240, "--prune: at most 64 characters (got 10242 characters); expected KEEP"),
    ],
)
def test_serve_bounds_a_long_until_or_prune_through_its_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str, text: str, message: str
) -> None:
    """The parser bounds the text (no check of its own in ``nbest serve``), and its message
    names the flag, as ``nbest run`` prints it: one line, the value not echoed back."""
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", never)
    with pytest.raises(SystemExit) as info:
        main(["serve", "--db", str(tmp_path / "p.db"), flag, text], engine_factory=lambda _: {"default": ScriptedEngine()})
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"nbest: error: {message}"), err
    assert "9" * 100 not in err and len(err) < 300


def test_serve_applies_its_until_unless_the_request_sets_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    # candidates 0-3 answer "4" at once; the rest take 5 s: a rule that stops after 4 aborts them
    engine = ScriptedEngine(respond=by_index({i: Step("4", delay=0.05 if i < 4 else 5.0) for i in range(8)}))

    def engines(options: EngineOptions) -> dict[str, Engine]:
        return {"default": engine}

    apps: list[FastAPI] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    argv = ["serve", "--db", str(tmp_path / "p.db"), "--until", "beta:0.95", "--wave", "4", "--reranker", "vote"]
    main(argv, engine_factory=engines)
    assert (
        "nbest: by default --until beta:0.95 --wave 4 (a request's own until/wave/prune wins; null: off; see /v1/settings)"
        in capsys.readouterr().err
    )
    with running(apps[0]) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/settings").json() == {"until": "beta:0.95", "wave": 4, "prune": None}
        served = client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8})
        assert served.status_code == 200, served.text
        assert served.json()["samples_used"] == 4
        own = client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8, "until": "esc:2"})
        assert own.status_code == 200, own.text
        assert own.json()["samples_used"] == 2
        engine.respond = by_index({}, Step("4", delay=0.01))
        off = client.post("/v1/nbest", json={"prompt": "2+2?", "n": 8, "until": None})
        assert off.status_code == 200, off.text
        assert off.json()["samples_used"] is None and len(off.json()["candidates"]) == 8
    assert engine.running == set()
