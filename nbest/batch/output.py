"""The batch output file: append-only, one JSON line per finished prompt.

Each Result is written as one line with a single ``write`` on a file opened in
append mode, then ``fsync`` ed, so a finished prompt survives a crash. A crash
in the middle of a write can leave a *torn* last line (no trailing newline, or
not valid JSON): :func:`open_output` detects it, cuts it off, and the prompt
is generated again. Any other unreadable line means the file was not written
by nbest (or was edited) and is refused rather than guessed at.
"""

from __future__ import annotations

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
    """Read the ids already done in ``path`` (an empty Resume when it does not exist).

    The last line is torn when it has no newline, or when it is not a result.

    Raises:
        ConfigError: a line before the last one is not a result line.
    """
    if not path.exists():
        return Resume(set(), 0, False)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    done: set[str] = set()
    offset = 0
    for number, line in enumerate(lines, start=1):
        ident = _result_id(line)
        if ident is None:
            if number == len(lines) and not tail:
                return Resume(done, offset, True)
            raise ConfigError(
                f"output: line {number} of {path} is not an nbest result; refusing to append to it",
                parameter="output",
                value=str(path),
            )
        done.add(ident)
        offset += len(line) + 1
    return Resume(done, offset, bool(tail))


def _result_id(line: bytes) -> str | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or "candidates" not in data:
        return None
    return str(data["id"])


def open_output(path: Path) -> tuple[OutputLog, Resume]:
    """Open ``path`` for appending results, after cutting off a torn last line.

    Raises:
        ConfigError: the file holds a line that is not a result (see :func:`scan_output`),
            or its folder does not exist.
    """
    if not path.parent.is_dir():
        raise ConfigError(f"output: folder {path.parent} does not exist", parameter="output", value=str(path))
    resume = scan_output(path)
    if resume.torn:
        with path.open("r+b") as f:
            f.truncate(resume.good_bytes)
            f.flush()
            os.fsync(f.fileno())
    return OutputLog(path), resume


class OutputLog:
    """Appends Results to the output file, one fsync'ed line each (see the module docs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = anyio.Lock()

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
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
