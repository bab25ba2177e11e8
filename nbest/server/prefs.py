"""The preference log: which candidate a person chose, in SQLite.

One row per choice (the prompt, the whole Result as JSON, the chosen candidate,
any ranking or edit, the time and a user label) and one row per candidate
(its text, rank, scores and spec), written in one transaction: a reader never
sees a choice without its candidates, and a writer killed mid-write leaves the
database as it was before. The database runs in WAL mode, so readers do not
block the writer; concurrent writers queue on SQLite's lock. A choice is on
disk when :meth:`PreferenceStore.record` returns (``synchronous=FULL``: the
write-ahead log is synced at each commit: one fsync per choice, measured at
0.2 to 4 ms more per choice by ``benchmarks/prefs_durability.py``), so a
choice the server acknowledged survives a power cut. A full disk, a read-only
or broken file raise :class:`StorageError` carrying SQLite's own reason; the
choices logged before stay intact.

    >>> from nbest.types import Candidate, CandidateSpec, Result, SamplingParams
    >>> texts = ["Paris.", "It is Paris.", "Lyon."]
    >>> candidates = [Candidate(index=i, rank=i + 1, text=t, spec=CandidateSpec(index=i, params=SamplingParams()))
    ...               for i, t in enumerate(texts)]
    >>> result = Result(id="req-1", prompt="Capital of France?", n=3, candidates=candidates, best=candidates[0])
    >>> store = PreferenceStore(":memory:")
    >>> store.record(result, chosen=result.candidates[1].index, user="ana")
    1
    >>> [(choice.chosen_text, choice.chosen_rank, choice.user) for choice in store]
    [('It is Paris.', 2, 'ana')]
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nbest._models import default_home
from nbest.errors import ConfigError, NbestError
from nbest.types import NbestModel, Prompt, Result

__all__ = ["Choice", "PreferenceStore", "StorageError", "default_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS choices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created     REAL    NOT NULL,
    request_id  TEXT    NOT NULL,
    prompt      TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    chosen      INTEGER NOT NULL,
    chosen_rank INTEGER,
    top_index   INTEGER,
    ranking     TEXT,
    edited_text TEXT,
    user        TEXT,
    result      TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    choice_id   INTEGER NOT NULL REFERENCES choices(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    rank        INTEGER,
    text        TEXT    NOT NULL,
    score       REAL,
    confidence  REAL,
    scores      TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (choice_id, idx)
);
CREATE INDEX IF NOT EXISTS choices_created ON choices(created);
"""


class StorageError(NbestError, sqlite3.DatabaseError):
    """The preference log could not be read or written: the disk is full (``full``),
    the file is read-only, not a database, or the device failed. The message is
    SQLite's reason; the SQLite error is kept as ``__cause__`` (and code that
    catches ``sqlite3.Error`` still catches this)."""

    def __init__(self, message: str, *, full: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.full = full
        """True when the disk (or the database's size limit) is full."""
        self.code = code
        """SQLite's error name (``SQLITE_FULL``, ``SQLITE_READONLY``, ``SQLITE_IOERR_WRITE`` ...)."""


def _storage_error(exc: sqlite3.Error, path: str, doing: str) -> StorageError:
    code = getattr(exc, "sqlite_errorname", None)
    full = code == "SQLITE_FULL" or "full" in str(exc)
    return StorageError(f"preference log {path}: cannot {doing}: {exc}", full=full, code=code)


@contextlib.contextmanager
def _translated(path: str, doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _storage_error(exc, path, doing) from exc


def default_path() -> Path:
    """``$NBEST_HOME/preferences.db``."""
    return default_home() / "preferences.db"


class Choice(NbestModel):
    """One logged choice."""

    id: int
    """Row id (increasing)."""
    created: float
    """Unix time of the choice."""
    request_id: str
    """The Result's id."""
    prompt: Prompt
    """The prompt the candidates answer."""
    chosen: int
    """Index of the chosen candidate."""
    chosen_rank: int | None
    """The rank the ranker gave the chosen candidate (1: it agreed)."""
    ranking: list[int] | None = None
    """The person's full ranking, best first (candidate indices), if given."""
    edited_text: str | None = None
    """The chosen text as the person edited it, if edited."""
    user: str | None = None
    """Who chose."""
    result: Result
    """Every candidate with its spec and scores."""

    @property
    def chosen_text(self) -> str:
        """The edit if any, else the chosen candidate's text."""
        if self.edited_text is not None:
            return self.edited_text
        return next(c.text for c in self.result.candidates if c.index == self.chosen)


class PreferenceStore:
    """SQLite preference log; safe to share between threads and processes.

    Args:
        path: the database file (created with its folder), a ``sqlite:///``
            URL, ``":memory:"``, or None for :func:`default_path`.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = default_path()
        text = str(path)
        if text.startswith("sqlite:///"):
            text = text.removeprefix("sqlite:///")
        elif "://" in text:
            raise ConfigError(
                f"preferences: only sqlite:/// URLs or file paths are supported (got {text!r})",
                parameter="preferences",
                value=text,
            )
        self.path = text
        if text != ":memory:":
            try:
                Path(text).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"preference log {text}: cannot create its folder: {exc.strerror or exc}") from exc
            self.path = str(Path(text).expanduser())
        self._lock = threading.Lock()
        with _translated(self.path, "open it"):
            self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            try:
                self._conn.execute("PRAGMA busy_timeout = 30000")
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = FULL")  # an acknowledged choice survives a power cut
                self._conn.execute("PRAGMA foreign_keys = ON")
                with self._lock:
                    self._conn.executescript(_SCHEMA)
            except sqlite3.Error:
                self._conn.close()
                raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        result: Result,
        *,
        chosen: int,
        ranking: Sequence[int] | None = None,
        edited_text: str | None = None,
        user: str | None = None,
    ) -> int:
        """Log that a person chose candidate ``chosen`` (its index) of ``result``;
        the new row's id. The choice is on disk when this returns.

        Raises:
            ConfigError: ``chosen`` or ``ranking`` name no candidate of the
                result, or the ranking repeats one.
            StorageError: the log could not be written (disk full, read-only,
                I/O error); nothing of this choice is kept, earlier ones are intact.
        """
        by_index = {c.index: c for c in result.candidates}
        if chosen not in by_index:
            raise ConfigError(
                f"chosen: no candidate with index {chosen}; indices are {sorted(by_index)}", parameter="chosen", value=chosen
            )
        if not by_index[chosen].ok:
            raise ConfigError(
                f"chosen: candidate {chosen} failed ({by_index[chosen].error}); choose one that succeeded",
                parameter="chosen",
                value=chosen,
            )
        if ranking is not None:
            ranking = list(ranking)
            unknown = [i for i in ranking if i not in by_index]
            if unknown or len(set(ranking)) != len(ranking):
                raise ConfigError(
                    f"ranking: must list distinct candidate indices of the result (got {ranking})",
                    parameter="ranking",
                    value=ranking,
                )
            if ranking and ranking[0] != chosen:
                raise ConfigError(
                    f"ranking: must start with the chosen candidate {chosen} (got {ranking})", parameter="ranking", value=ranking
                )
        top = next((c.index for c in result.candidates if c.rank == 1), None)
        row = (
            time.time(),
            result.id,
            json.dumps(_prompt_json(result.prompt)),
            result.n,
            chosen,
            by_index[chosen].rank,
            top,
            json.dumps(ranking) if ranking is not None else None,
            edited_text,
            user,
            result.model_dump_json(),
        )
        with self._lock, _translated(self.path, "log the choice"), self._transaction() as cur:
            cur.execute(
                "INSERT INTO choices (created, request_id, prompt, n, chosen, chosen_rank, top_index, ranking, edited_text,"
                " user, result) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            choice_id = int(cur.lastrowid or 0)
            cur.executemany(
                "INSERT INTO candidates (choice_id, idx, rank, text, score, confidence, scores, spec, error)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        choice_id,
                        c.index,
                        c.rank,
                        c.text,
                        c.score,
                        c.confidence,
                        json.dumps(c.scores),
                        c.spec.model_dump_json(),
                        c.error,
                    )
                    for c in result.candidates
                ],
            )
        return choice_id

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): a second
            # rollback would fail and hide the real cause, which is what propagates
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            raise

    def count(self) -> int:
        """How many choices are logged."""
        with self._lock, _translated(self.path, "count the choices"):
            return int(self._conn.execute("SELECT COUNT(*) FROM choices").fetchone()[0])

    def page(self, offset: int = 0, limit: int = 50, *, max_bytes: int | None = None) -> list[Choice]:
        """Choices, oldest first, ``limit`` of them from ``offset``; with ``max_bytes``,
        fewer when their Results' JSON would pass that many bytes (always at least one):
        the next page starts at ``offset + len(page)``."""
        if offset < 0 or limit < 0:
            raise ConfigError("offset and limit must not be negative", parameter="offset" if offset < 0 else "limit")
        rows: list[tuple[Any, ...]] = []
        size = 0
        with self._lock, _translated(self.path, "read the choices"):
            cursor = self._conn.execute(
                "SELECT id, created, request_id, chosen, chosen_rank, ranking, edited_text, user, result, length(result)"
                " FROM choices ORDER BY id LIMIT ? OFFSET ?",
                (limit, offset),
            )
            for row in cursor:  # read one row at a time: a page never holds more than max_bytes of Results
                size += row[-1]
                if max_bytes is not None and rows and size > max_bytes:
                    break
                rows.append(row[:-1])
            cursor.close()
        return [_choice(row) for row in rows]

    def __iter__(self) -> Iterator[Choice]:
        offset = 0
        while page := self.page(offset, 500, max_bytes=16_000_000):  # bounded memory over any log
            yield from page
            offset += len(page)


def _prompt_json(prompt: Prompt) -> Any:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


def _choice(row: tuple[Any, ...]) -> Choice:
    cid, created, request_id, chosen, chosen_rank, ranking, edited, user, result = row
    res = Result.model_validate_json(result)
    return Choice(
        id=cid,
        created=created,
        request_id=request_id,
        prompt=res.prompt,
        chosen=chosen,
        chosen_rank=chosen_rank,
        ranking=json.loads(ranking) if ranking else None,
        edited_text=edited,
        user=user,
        result=res,
    )
