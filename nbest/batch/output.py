"""The batch output file: append-only, one JSON line per finished prompt.

Each Result is written as one line with a single ``write`` on a file opened in
append mode, then ``fsync`` ed, so a finished prompt survives a crash. A crash
in the middle of a write can leave a *torn* last line (no trailing newline, or
not valid JSON): :func:`open_output` detects it, cuts it off, and the prompt
is generated again. Any other unreadable line means the file was not written
by nbest (or was edited) and is refused rather than guessed at. The file is
read one line at a time, so resuming a large output costs the memory of its
longest line and the set of ids.

One writer at a time: :class:`OutputLog` holds an exclusive lock
(``flock``) on the file while it is open, taken before the file is read or
cut, so a second run on the same output stops with a
:class:`~nbest.errors.ConfigError` naming the process that holds it; the
lock goes with the process, however it ends (on a file system without
``flock`` the file is written unlocked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

import anyio
import anyio.to_thread

from nbest.errors import ConfigError
from nbest.types import Result

__all__ = ["OutputLog", "Resume", "open_output", "scan_output"]


class Resume:
    """What an existing output file holds."""

    def __init__(self, done: set[str], good_bytes: int, torn: bool) -> None:
        self.done = done
        """Ids with a complete result line."""
        self.good_bytes = good_bytes
        """Length of the file up to the end of its last complete line."""
        self.torn = torn
        """True when a torn last line follows ``good_bytes``."""


def scan_output(path: Path) -> Resume:
    """Read the ids already done in ``path`` (an empty Resume when it does not
    exist), one line at a time.

    The last line is torn when it has no newline, or when it is not a result.

    Raises:
        ConfigError: a line before the last one is not a result line, or the
            file cannot be read.
    """
    done: set[str] = set()
    offset = 0
    bad_line = 0  # a line that is not a result: torn if it is the last one
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if bad_line:
                    break
                if not line.endswith(b"\n"):
                    return Resume(done, offset, True)
                ident = _result_id(line)
                if ident is None:
                    bad_line = number
                    continue
                done.add(ident)
                offset += len(line)
            else:
                return Resume(done, offset, bool(bad_line))
    except FileNotFoundError:
        return Resume(set(), 0, False)
    except OSError as exc:
        raise ConfigError(f"output: cannot read {path} ({exc.strerror or exc})", parameter="output", value=str(path)) from None
    raise ConfigError(
        f"output: line {bad_line} of {path} is not an nbest result; refusing to append to it",
        parameter="output",
        value=str(path),
    )


def _result_id(line: bytes) -> str | None:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "candidates" not in data:
        return None
    return str(data["id"])


def open_output(path: Path) -> tuple[OutputLog, Resume]:
    """Open ``path`` for appending results (locked, see the module docs), after
    cutting off a torn last line.

    Raises:
        ConfigError: another process writes ``path``, the file holds a line
            that is not a result (see :func:`scan_output`), its folder does
            not exist, or it cannot be opened.
    """
    if not path.parent.is_dir():
        raise ConfigError(f"output: folder {path.parent} does not exist", parameter="output", value=str(path))
    log = OutputLog(path)
    try:
        resume = scan_output(path)
        if resume.torn:
            os.ftruncate(log.fileno(), resume.good_bytes)
            os.fsync(log.fileno())
    except BaseException:
        log.close()
        raise
    return log, resume


def _lock_holder(path: Path) -> int | None:
    """The id of the process holding a ``flock`` on ``path`` (Linux, from
    ``/proc/locks``), or None when unknown."""
    try:
        st = path.stat()
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for row in f:
                fields = row.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None


class OutputLog:
    """Appends Results to the output file, one fsync'ed line each, holding the
    file's lock while open (see the module docs).

    Raises:
        ConfigError: another process holds the lock, or the file cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"output: cannot open {path} ({exc.strerror or exc})", parameter="output", value=str(path)
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            holder = _lock_holder(path)
            who = f"process {holder}" if holder is not None else "another process"
            raise ConfigError(
                f"output: {path} is being written by {who} (another nbest batch?); "
                "wait for it to finish, or write to another file",
                parameter="output",
                value=str(path),
            ) from None
        except OSError:  # a file system without flock: written unlocked
            pass
        self._lock = anyio.Lock()

    def fileno(self) -> int:
        """The open file descriptor."""
        return self._fd

    def write_sync(self, result: Result) -> None:
        """Append one result and fsync (blocking)."""
        line = result.model_dump_json().encode() + b"\n"
        written = os.write(self._fd, line)
        while written < len(line):  # a short write: finish the same line
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)

    async def write(self, result: Result) -> None:
        """Append one result and fsync, off the event loop; one writer at a time."""
        async with self._lock:
            await anyio.to_thread.run_sync(self.write_sync, result)

    def close(self) -> None:
        """Close the file and release its lock (idempotent)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
