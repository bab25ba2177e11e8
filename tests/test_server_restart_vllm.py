"""Fault test on the real engine: kill the engine core under a running ``nbest serve``;
/healthz answers 503, the server restarts the engine, and serves the next request.
Then SIGKILL ``nbest serve`` itself: no vLLM process outlives it.

One server process, two engine starts (the first and the restart)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import engine_processes, wait_gone

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s; server log:\n{log.read_text()[-3000:]}")


def _health(client: httpx.Client) -> tuple[int, dict[str, object]]:
    r = client.get("/healthz")
    return r.status_code, r.json()


def test_a_killed_engine_core_is_reported_and_restarted(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "nbest.cli", "serve", "--port", "0", "--db", str(tmp_path / "prefs.db")]
    argv += ["--engine-restarts", "2"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    with log.open("w") as err:  # a file, not a pipe: nobody has to drain vLLM's logs during the restart
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
    server = psutil.Process(proc.pid)
    seen: list[psutil.Process] = []  # every engine process, ended at the end whatever happens
    try:
        found: list[str] = []

        def listening() -> bool:
            assert proc.poll() is None, "nbest serve exited: " + log.read_text()[-3000:]
            found[:] = re.findall(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
            return bool(found)

        _wait(listening, 300, "nbest serve did not listen", log)
        first = engine_processes(server)
        seen += first
        cores = [p for p in first if "EngineCore" in p.name()]
        assert cores, f"no engine core under nbest serve: {first}"
        with httpx.Client(base_url=found[0], timeout=60) as client:
            assert _health(client) == (200, {"status": "ok", "model": "smollm2-135m-instruct"})
            cores[0].send_signal(signal.SIGKILL)

            _wait(lambda: _health(client)[0] == 503, 30, "/healthz did not report the dead engine", log)
            _, body = _health(client)
            assert body["status"] in ("restarting", "ok"), body
            r = client.post("/v1/nbest", json={"prompt": "Say hi.", "n": 2, "params": {"max_tokens": 4}})
            assert r.status_code in (200, 503), r.text  # 503 (Retry-After) while the new engine loads
            if r.status_code == 503:
                assert r.headers["retry-after"]

            _wait(lambda: _health(client)[0] == 200, 300, "the engine was not restarted", log)
            assert _health(client)[1]["engine_restarts"] == 1
            r = client.post("/v1/nbest", json={"prompt": "Say hi.", "n": 2, "params": {"max_tokens": 4}})
            assert r.status_code == 200, r.text
            assert len(r.json()["candidates"]) == 2 and all(c["error"] is None for c in r.json()["candidates"])
            assert "nbest_engine_restarts_total 1.0" in client.get("/metrics").text
        # nothing of the dead engine lives on (its workers were ended when it was closed)
        assert not wait_gone(first, timeout=15), "processes of the dead engine outlived it"
        assert "restarting the engine" in log.read_text() and "engine restarted" in log.read_text()
        # killed outright, as by the OOM killer: the new engine's processes go with it
        second = engine_processes(server)
        seen += second
        assert any("EngineCore" in p.name() for p in second), second
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        alive = wait_gone(second, timeout=20)
        assert not alive, f"vLLM processes outlived the killed nbest serve: {alive}"
    finally:
        if proc.poll() is None:
            seen += engine_processes(server)
            proc.kill()
            proc.wait()
        for p in seen:
            with contextlib.suppress(psutil.Error):
                p.kill()
