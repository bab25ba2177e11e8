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

The errors file of ``nbest batch`` is written while the input is checked, into
a hidden *partial* file beside it (:func:`partial_path`: ``.NAME.PID.partial``),
put in place only once the whole input passed. A process killed meanwhile
leaves that file behind; the next run on the same errors file removes it
(:func:`remove_stale_partials`). A partial is stale when no process holds its
``flock`` (:func:`open_partial` takes it; the kernel drops it when the writer
dies) and the process its name gives is gone from this machine (or is this
one), so a run still checking its input keeps its own, also on a folder that
several machines share.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import TextIO

import anyio
import anyio.to_thread

from nbest.errors import ConfigError
from nbest.types import Result

__all__ = ["OutputLog", "Resume", "open_output", "open_partial", "partial_path", "remove_stale_partials", "scan_output"]


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


# -- the partial errors file ----------------------------------------------------------------------

_PARTIAL = ".partial"


def partial_path(path: Path) -> Path:
    """Where this process writes ``path`` before putting it in place: a hidden
    file beside it that names the process.

    >>> partial_path(Path("out/answers.jsonl.errors.jsonl")).name  # doctest: +SKIP
    '.answers.jsonl.errors.jsonl.4242.partial'
    """
    return path.with_name(f".{path.name}.{os.getpid()}{_PARTIAL}")


def open_partial(partial: Path) -> TextIO:
    """Open ``partial`` (:func:`partial_path`) for writing, holding its ``flock``
    while it is open, so :func:`remove_stale_partials` in another run leaves it
    alone (on a file system without ``flock``: unlocked, its process id still
    says it is live).

    Raises:
        OSError: it cannot be created.
    """
    f = partial.open("w", encoding="utf-8", errors="backslashreplace")
    with contextlib.suppress(OSError):  # held already cannot be: the name is this process's
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the partial files of ``path`` that runs killed while writing
    them left behind (see the module docs); return those removed.

    One pass over the folder; only hidden files named like a partial of
    ``path`` (``.NAME.<digits>.partial``) are looked at, never followed
    through a symbolic link. A folder that cannot be read, or a file that
    cannot be opened or removed, is left as it is: nothing here stops a run.
    """
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = os.scandir(path.parent)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            pid = entry.name[len(prefix) : -len(_PARTIAL)]
            if not (entry.name.startswith(prefix) and entry.name.endswith(_PARTIAL) and pid.isascii() and pid.isdigit()):
                continue
            if _alive(int(pid)):
                continue
            if _remove_unlocked(Path(entry.path)):
                removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    """Whether another process ``pid`` runs on this machine (this one does not count:
    its own partial is not open yet when a run looks for stale ones)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    except (OverflowError, OSError):  # no such process id can exist
        return False
    return True


def _remove_unlocked(partial: Path) -> bool:
    """Remove ``partial`` unless a process holds its ``flock``; whether it was removed."""
    try:
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer still runs (on another machine sharing the folder)
            return False
        except OSError:  # a file system without flock: the process id said it is stale
            pass
        try:
            os.unlink(partial)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)
