"""``nbest run`` end to end on the real engine, in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import engine_processes, wait_gone

pytestmark = pytest.mark.slow

CANDIDATE_FIELDS = {
    "index", "rank", "text", "score", "confidence", "scores", "spec",
    "finish_reason", "num_tokens", "mean_logprob", "latency_s", "error",
}  # fmt: skip
PARAM_FIELDS = {"temperature", "top_p", "top_k", "min_p", "seed", "max_tokens"}


def test_run_json_matches_the_documented_result() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbest.cli",
            "run",
            "What is the capital of France?",
            "-n",
            "3",
            "--max-tokens",
            "24",
            "--seed",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # stdout holds the JSON only: engine logs go to stderr
    assert {"id", "prompt", "n", "candidates", "best", "answers", "usage", "timings"} <= set(result)
    assert result["n"] == 3 and len(result["candidates"]) == 3
    for c in result["candidates"]:
        assert set(c) >= CANDIDATE_FIELDS
        assert {"engine", "params", "strategy"} <= set(c["spec"])
        assert set(c["spec"]["params"]) >= PARAM_FIELDS
        assert c["text"] and c["error"] is None
    assert [c["rank"] for c in result["candidates"]] == [1, 2, 3]
    assert sorted(c["spec"]["params"]["seed"] for c in result["candidates"]) == [4, 5, 6]
    assert result["best"] == result["candidates"][0]
    assert {"answer", "confidence", "support"} <= set(result["answers"][0])
    assert {"prompt_tokens", "completion_tokens"} <= set(result["usage"])
    assert {"generate_s", "rerank_s"} <= set(result["timings"])


def test_ctrl_c_mid_generation_leaves_no_engine_process() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nbest.cli",
            "run",
            "Write a very long essay about the history of bread.",
            "-n",
            "8",
            "--max-tokens",
            "2000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while not engine_processes(parent):  # wait for the engine to start ...
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the engine did not start"
            time.sleep(0.5)
        procs = engine_processes(parent)
        time.sleep(45)  # ... load the model and generate for a while
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "nbest: error: interrupted"
    assert not wait_gone(procs), "engine processes survived Ctrl-C"
