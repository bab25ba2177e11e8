"""A watchdog that ends the engine processes of a process that died without closing them.

vLLM runs its engine core (and, on GPUs, its workers) in child processes. When
the process that started them is killed outright (SIGKILL, the OOM killer) they
live on, holding their memory (on a GPU, the memory a restarted server needs).
:class:`Reaper` starts this file as a small process of its own, tells it the
pids to watch over a pipe, and tells it ``exit`` when the engine closes cleanly.
When the pipe reaches end-of-file without ``exit``, or the parent changes (the
process that started it died), it sends SIGTERM to the watched processes and
every process below them, waits a few seconds, then SIGKILLs what is left.

This file runs as a script (``python _reaper.py``): it imports nothing of
nbest, only the standard library and ``psutil`` (a dependency of vLLM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any

__all__ = ["Reaper", "process_tree", "reap"]

GRACE_S = 3.0
"""Seconds between SIGTERM and SIGKILL."""


class Reaper:
    """The parent's handle on the watchdog process.

    >>> reaper = Reaper.start()
    >>> reaper.watch([])  # the pids watched (with those below them), and their start times
    {}
    >>> reaper.close()
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls) -> Reaper:
        """Start the watchdog (in its own session: a Ctrl-C or hang-up meant for the parent leaves it be)."""
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready": its signal handlers are in place
        proc.stdout.close()
        return cls(proc)

    def _send(self, line: str) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def watch(self, pids: list[int]) -> dict[int, float]:
        """Watch these processes and those below them now (and those below them when the
        time comes); the pids watched, with their start times (see :func:`reap`)."""
        tree = process_tree(pids)
        for pid, created in tree.items():
            self._send(f"watch {pid} {created}")
        return tree

    def close(self) -> None:
        """The engine closed cleanly: the watchdog exits without touching anything."""
        self._send("exit")
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def process_tree(pids: list[int]) -> dict[int, float]:
    """These processes and every process below them, with their start times."""
    if not pids:
        return {}
    import psutil  # type: ignore[import-untyped]

    tree: dict[int, float] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                tree[p.pid] = float(p.create_time())
        except psutil.Error:
            continue
    return tree


def reap(watched: dict[int, float]) -> None:
    """SIGTERM the watched processes and everything below them, then SIGKILL what is left.

    A pid whose start time differs from the one given names another process now: it is left alone.
    """
    if not watched:
        return
    import psutil

    procs: dict[int, Any] = {}
    for pid, created in watched.items():
        try:
            proc = psutil.Process(pid)
            if created and abs(proc.create_time() - created) > 0.01:
                continue  # the pid now names another process
            for p in [proc, *proc.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.Error:
            continue
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=GRACE_S)


def _main(parent: int, stdin: IO[bytes]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent's SIGTERM is its own: it closes its engine
    sys.stdout.write("ready\n")
    sys.stdout.close()
    watched: dict[int, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    clean = threading.Event()

    def read() -> None:
        for raw in stdin:
            words = raw.decode(errors="replace").split()
            if words[:1] == ["exit"]:
                clean.set()
                break
            if words[:1] == ["watch"] and len(words) == 3:
                with lock:
                    watched[int(words[1])] = float(words[2])
        done.set()  # end of file: the parent is gone (or said exit)

    threading.Thread(target=read, daemon=True).start()
    # A forked child of the parent may hold the pipe open after the parent dies:
    # a new parent pid says it as well.
    while not done.wait(0.5):
        if os.getppid() != parent:
            break
    if clean.is_set():
        return
    with lock:
        targets = dict(watched)
    reap(targets)


if __name__ == "__main__":
    _main(int(sys.argv[1]), sys.stdin.buffer)
