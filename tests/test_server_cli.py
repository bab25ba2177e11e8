"""``nbest serve`` rejects bad options with one line and status 2, before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    ],
)
def test_serve_rejects_bad_options(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbest.cli", "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
