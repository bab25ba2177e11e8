"""Progress of a batch run on stderr: prompts done, candidates/s, tokens/s, ETA.

On a terminal it is a rich progress bar; otherwise (a log file, a pipe) one
plain line every ``every`` seconds and at the end, so logs stay readable.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from nbest.batch.runner import BatchStats
from nbest.types import Result

__all__ = ["BatchProgress", "StatusColumn", "progress_line"]


def progress_line(stats: BatchStats) -> str:
    """One line summing up ``stats``.

    >>> s = BatchStats(total=4, done=2, candidates=8, tokens=100, started=0.0)
    >>> progress_line(s).startswith("nbest batch: 2/4 prompts")
    True
    """
    elapsed = max(stats.elapsed, 1e-9)
    rate = stats.done / elapsed
    eta = "?" if rate == 0 else str(datetime.timedelta(seconds=round((stats.total - stats.done) / rate)))
    return (
        f"nbest batch: {stats.done}/{stats.total} prompts, {stats.candidates / elapsed:.1f} candidates/s, "
        f"{stats.tokens / elapsed:.1f} tokens/s, ETA {eta}"
    )


class _Rate(ProgressColumn):
    def __init__(self, key: str, label: str) -> None:
        super().__init__()
        self.key, self.label = key, label

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        value = float(task.fields.get(self.key, 0)) / elapsed if elapsed > 0 else 0.0
        return Text(f"{value:.1f} {self.label}")


class StatusColumn(ProgressColumn):
    """A column showing what ``status()`` says when the bar is drawn (e.g. replicas' states)."""

    def __init__(self, status: Callable[[], str]) -> None:
        super().__init__()
        self.status = status

    def render(self, task: Task) -> Text:
        return Text(self.status())


class BatchProgress:
    """Shows a batch run's progress; call :meth:`update` after each result.

    Use as a context manager around the run (after the engine has started,
    so the rates exclude start-up). ``status`` adds a few words of its own
    (the replicas of a run on a cluster).
    """

    def __init__(
        self, total: int, *, console: Console | None = None, every: float = 5.0, status: Callable[[], str] | None = None
    ) -> None:
        self.console = console or Console(stderr=True)
        self.total = total
        self.every = every
        self.status = status
        self._last = 0.0
        self._stats: BatchStats | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]nbest batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("prompts"),
                _Rate("candidates", "candidates/s"),
                _Rate("tokens", "tokens/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                *([StatusColumn(status)] if status is not None else []),
                console=self.console,
            )

    def __enter__(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("batch", total=self.total, candidates=0, tokens=0)
        self._last = time.perf_counter()
        return self

    def update(self, result: Result, stats: BatchStats) -> None:
        """Record one finished prompt (``stats`` already counts it)."""
        self._stats = stats
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=stats.done, candidates=stats.candidates, tokens=stats.tokens)
        elif time.perf_counter() - self._last >= self.every:
            self._last = time.perf_counter()
            self.console.print(self._line(stats), highlight=False, soft_wrap=True)

    def _line(self, stats: BatchStats) -> str:
        return progress_line(stats) + (f", {self.status()}" if self.status is not None else "")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self._stats is not None:
            self.console.print(self._line(self._stats), highlight=False, soft_wrap=True)
