"""No orphans: the processes an engine started end when the process that started
them is killed outright (the watchdog of nbest/engines/_reaper.py).

These stand ``sleep`` processes in for vLLM's engine core and its workers; the real
engine's processes are checked in test_server_restart_vllm.py (SIGKILL ``nbest serve``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from nbest.engines._reaper import Reaper
from tests.conftest import wait_gone

ROOT = Path(__file__).resolve().parent.parent

# A parent that starts a watchdog and an "engine" (a shell with a child of its own,
# as the engine core has its workers), prints their pids, then waits to be killed
# (or, with "close", closes the watchdog first, as a clean aclose does).
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from nbest.engines._reaper import Reaper
    reaper = Reaper.start()
    engine = subprocess.Popen(["sh", "-c", "sleep 120 & wait"])
    time.sleep(0.3)
    reaper.watch([engine.pid])
    if sys.argv[1] == "close":
        reaper.close()
    print(engine.pid, reaper.proc.pid, flush=True)
    time.sleep(120)
    """
)


def _start_parent(mode: str) -> tuple[subprocess.Popen[str], psutil.Process, list[psutil.Process], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert parent.stdout is not None
    engine_pid, reaper_pid = map(int, parent.stdout.readline().split())
    engine = psutil.Process(engine_pid)
    return parent, engine, [engine, *engine.children(recursive=True)], reaper_pid


def parent_process(parent: subprocess.Popen[str]) -> psutil.Process | None:
    try:
        return psutil.Process(parent.pid) if parent.poll() is None else None
    except psutil.Error:
        return None


def _kill(procs: list[psutil.Process | None]) -> None:
    for proc in procs:
        if proc is None:
            continue
        with contextlib.suppress(psutil.Error):
            proc.kill()


def test_engine_processes_end_when_their_parent_is_killed() -> None:
    parent, _, engine_tree, reaper_pid = _start_parent("watch")
    try:
        reaper = psutil.Process(reaper_pid)
        assert len(engine_tree) == 2  # the "engine" and its "worker"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert not wait_gone(engine_tree, timeout=15), "engine processes outlived their killed parent"
        assert not wait_gone([reaper], timeout=5), "the watchdog did not exit after its work"
    finally:
        _kill([*engine_tree, parent_process(parent)])


def test_a_clean_close_leaves_the_engine_alone() -> None:
    parent, _, engine_tree, reaper_pid = _start_parent("close")
    try:
        assert not psutil.pid_exists(reaper_pid), "the watchdog did not exit when closed"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert len(wait_gone(engine_tree, timeout=1.5)) == 2  # nobody ends them: the parent closed its engine itself
    finally:
        _kill([*engine_tree, parent_process(parent)])


def test_a_watchdog_ignores_signals_meant_for_its_parent() -> None:
    reaper = Reaper.start()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            reaper.proc.send_signal(sig)
        with pytest.raises(subprocess.TimeoutExpired):
            reaper.proc.wait(timeout=1)
    finally:
        reaper.close()
    assert reaper.proc.returncode == 0


def test_the_engine_watches_its_processes_not_multiprocessing_helpers() -> None:
    from multiprocessing import resource_tracker

    from nbest.engines.vllm import _children

    resource_tracker.ensure_running()  # a child of this process that serves every user of multiprocessing
    tracker = resource_tracker._resource_tracker._pid  # type: ignore[attr-defined]
    engine = subprocess.Popen(["sleep", "30"])
    try:
        children = _children()
        assert engine.pid in children and tracker not in children
    finally:
        engine.kill()
        engine.wait()
