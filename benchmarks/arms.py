"""Running a benchmark's arm in a process of its own (one vLLM engine at a time, nothing
cached from another arm), for the benchmarks that re-run their own script with ``--arm``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

QUIET = {"VLLM_LOGGING_LEVEL": "WARNING", "TQDM_DISABLE": "1"}
"""What every arm's process gets: vLLM's warnings only, no progress bars."""


def run_arm(script: str, argv: Sequence[str], env: Mapping[str, str | None] = {}) -> dict[str, Any]:
    """Run ``python script *argv`` with this environment plus :data:`QUIET` and ``env`` (None
    takes a variable out) and return the last JSON object it printed on stdout; on failure its
    stderr's tail goes to stderr and the benchmark stops."""
    child = {**os.environ, **QUIET}
    for name, value in env.items():
        if value is None:
            child.pop(name, None)
        else:
            child[name] = value
    proc = subprocess.run([sys.executable, script, *argv], env=child, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"arm {' '.join(argv)} failed with status {proc.returncode}")
    return dict(json.loads(lines[-1]))
