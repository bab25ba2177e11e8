"""The processes a local Ray cluster starts (its raylet and GCS, and every worker:
``ray::IDLE``, ``ray::Replica``, ``ray::MapWorker(...)``), to check a test leaves none."""

from __future__ import annotations

import time

import psutil

RAY_PROCESSES = ("raylet", "gcs_server", "ray::")


def ray_processes(names: tuple[str, ...] = RAY_PROCESSES) -> set[int]:
    """Pids of the Ray processes alive now (zombies excluded) whose name or command line has one of ``names``."""
    found = set()
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = (proc.info["name"] or "") + " " + " ".join(proc.info["cmdline"] or [])
        if any(name in text for name in names):
            found.add(proc.pid)
    return found


def wait_ray_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """Those of ``pids`` still alive after waiting up to ``timeout`` seconds for them to end."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)
