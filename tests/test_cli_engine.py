"""``nbest run`` end to end on the real engine, in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
    """One run on the in-process engine (each run starts an engine: ~30 s on 2 cores) checks the
    documented JSON, adaptive stopping (--wave/--until) and a judge on the run's own engine."""
    argv = [
        sys.executable, "-m", "nbest.cli", "run", "What is 2 + 2? Answer with the number.",
        "-n", "16", "--wave", "4", "--until", "beta:0.9", "-t", "0.2", "--seed", "0", "--max-tokens", "16",
        "--reranker", "vote:number=2", "--reranker", "judge", "--json",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # stdout holds the JSON only: engine logs go to stderr
    assert {"id", "prompt", "n", "candidates", "best", "answers", "usage", "timings"} <= set(result)
    used = result["samples_used"]
    assert result["n"] == 16 and 4 <= used < 16  # stopped early
    assert len(result["candidates"]) == used
    for c in result["candidates"]:
        assert set(c) >= CANDIDATE_FIELDS
        assert {"engine", "params", "strategy"} <= set(c["spec"])
        assert set(c["spec"]["params"]) >= PARAM_FIELDS
        assert c["text"] and c["error"] is None
    assert [c["rank"] for c in result["candidates"]] == list(range(1, used + 1))
    assert sorted(c["spec"]["params"]["seed"] for c in result["candidates"]) == list(range(used))
    assert result["best"] == result["candidates"][0]
    assert {"answer", "confidence", "support"} <= set(result["answers"][0])
    assert result["answers"][0]["answer"] == "4"
    assert {"prompt_tokens", "completion_tokens"} <= set(result["usage"])
    assert {"generate_s", "rerank_s"} <= set(result["timings"])
    assert set(result["best"]["scores"]) == {"vote", "judge"}
    assert all(1.0 <= c["scores"]["judge"] <= 10.0 for c in result["candidates"] if c["scores"]["judge"] is not None)


ENGINE_READY = "init engine (profile, create kv cache, warmup model) took"
"""vLLM's INFO line once its engine core has loaded the model; nbest sends its requests right after."""


def test_ctrl_c_mid_generation_leaves_no_engine_process() -> None:
    argv = [sys.executable, "-m", "nbest.cli", "run", "Write a very long essay about the history of bread.",
            "-n", "8", "--max-tokens", "2000"]  # fmt: skip
    env = os.environ | {"VLLM_LOGGING_LEVEL": "INFO"}  # for ENGINE_READY
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ENGINE_READY in line:
                ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    procs: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 600
        while not ready.wait(0.5):  # wait for the engine to load the model ...
            assert proc.poll() is None, "".join(lines)[-2000:]
            assert time.monotonic() < deadline, "the engine did not start"
        procs = engine_processes(psutil.Process(proc.pid))
        assert procs, "no engine process: the check below would prove nothing"
        time.sleep(5)  # ... and generate (8 x 2000 tokens take minutes)
        assert proc.poll() is None, "finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 130, err[-2000:]
    # nbest's last word is its one line; multiprocessing's resource tracker (a process of its own, which
    # outlives ours by a moment) may print a "leaked semaphore" warning about vLLM's objects after it
    ours = [line for line in err.strip().splitlines() if "resource_tracker" not in line]
    assert ours[-1] == "nbest: error: interrupted", err[-2000:]
    assert not wait_gone(procs), "engine processes survived Ctrl-C"
