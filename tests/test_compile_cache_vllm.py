"""Compiling once the cache is warm, on the real engine: ``nbest models prepare --compile`` compiles
the default model into a compile cache of its own, after which ``nbest batch`` (a long-running
command, ``enforce_eager="auto"``) starts it compiled; ``nbest run`` stays eager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbest.engines.cpu import read_cpu_info

NBEST = [sys.executable, "-m", "nbest.cli"]


def nbest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NBEST, *args], env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_a_warm_compile_cache_makes_batch_compile(tmp_path: Path) -> None:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "VLLM_LOGGING_LEVEL": "WARNING"}
    info = json.loads(nbest("info", "--json", env=env).stdout)
    assert info["compile"]["long_running"] == "eager"
    if not read_cpu_info().native_bf16:  # float32 here: "auto" stays eager whatever the cache holds
        assert info["compile"]["reason"] == "eager: this CPU computes bfloat16 without native instructions"
        pytest.skip("serve, batch and eval compile only on a CPU with native bf16")
    assert "no warm compile cache" in info["compile"]["reason"]

    prepared = nbest("models", "prepare", "--compile", env=env)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert "the compile cache is warm" in prepared.stderr
    assert list((tmp_path / "inductor" / "nbest-compiled").glob("*.json"))
    info = json.loads(nbest("info", "--json", env=env).stdout)
    assert info["compile"]["long_running"] == "compiled", info["compile"]

    (tmp_path / "in.jsonl").write_text('{"prompt": "Say hi."}\n')
    out = tmp_path / "out.jsonl"
    batch = nbest("batch", str(tmp_path / "in.jsonl"), "-o", str(out), "-n", "2", "--max-tokens", "8", "--seed", "1", env=env)
    assert batch.returncode == 0, batch.stderr[-2000:]
    result = json.loads(out.read_text().splitlines()[0])
    engine = result["engines"]["default"]
    assert engine["args"]["enforce_eager"] is False
    assert engine["compile"].startswith("compiled: warm compile cache")
    assert all(c["num_tokens"] == 8 or c["finish_reason"] == "stop" for c in result["candidates"])
