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
from collections.abc import Container, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from nbest._models import default_home
from nbest.errors import ConfigError, NbestError
from nbest.types import NbestModel, Prompt, Result

__all__ = ["Choice", "PreferenceStore", "RankerStatus", "RankerVersion", "StorageError", "default_path", "scope_filter"]

RankerStatus = Literal["current", "superseded", "kept-out", "rolled-back"]

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
    result      TEXT    NOT NULL,
    task        TEXT,
    grp         TEXT,
    withdrawn   REAL
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
CREATE TABLE IF NOT EXISTS rankers (
    version     INTEGER PRIMARY KEY AUTOINCREMENT,
    scope       TEXT    NOT NULL,
    created     REAL    NOT NULL,
    config      TEXT    NOT NULL,
    choices     INTEGER NOT NULL,
    agreement   REAL,
    baseline    REAL,
    status      TEXT    NOT NULL,
    note        TEXT    NOT NULL,
    seen        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rankers_scope ON rankers(scope, status);
"""

# columns added after the first release: an older file gains them when opened (no row is lost)
_ADDED_COLUMNS = (("task", "TEXT"), ("grp", "TEXT"), ("withdrawn", "REAL"))
_SCOPE_INDEXES = """
CREATE INDEX IF NOT EXISTS choices_task ON choices(task);
CREATE INDEX IF NOT EXISTS choices_user ON choices(user);
"""

MAX_LABEL = 200
"""The longest task or user label a choice or a scope may carry (characters)."""


def _distinct_indices(name: str, indices: Sequence[int], candidates: Container[int]) -> list[int]:
    """``indices`` as a list, or ConfigError naming ``name``: each must be a candidate's, once."""
    indices = list(indices)
    if any(i not in candidates for i in indices) or len(set(indices)) != len(indices):
        raise ConfigError(
            f"{name}: must list distinct candidate indices of the result (got {indices[:20]})",
            parameter=name,
            value=indices[:20],
        )
    return indices


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
    group: list[int] | None = None
    """The candidates of the card the person picked (equivalent answers shown as one), if any."""
    task: str | None = None
    """The task label of the request (its metadata ``task``), for scoped learning."""
    withdrawn: float | None = None
    """Unix time the person withdrew (undid) this choice; None while it stands."""

    @property
    def chosen_text(self) -> str:
        """The edit if any, else the chosen candidate's text."""
        if self.edited_text is not None:
            return self.edited_text
        return next(c.text for c in self.result.candidates if c.index == self.chosen)


class RankerVersion(NbestModel):
    """One learned ranker in the history of a scope (see :meth:`PreferenceStore.save_version`)."""

    version: int
    """Increasing over the whole log (every scope); 0 is reserved for the base ranker."""
    scope: str
    """``global``, ``task:NAME`` or ``user:NAME``."""
    created: float
    """Unix time it was saved."""
    config: dict[str, Any]
    """The :class:`~nbest.rerankers.RankerConfig` as JSON."""
    choices: int
    """How many choices it was fitted on (for a rollback: those of the version it restores)."""
    agreement: float | None = None
    """Its held-out agreement (how often its top candidate was the one chosen)."""
    baseline: float | None = None
    """The held-out agreement, on the same choices, of the ranker it was compared with."""
    status: RankerStatus
    """``current`` (ranks requests of its scope), ``superseded`` (a later one replaced it),
    ``kept-out`` (its refit agreed less than the current ranker: never used),
    ``rolled-back`` (it was current until a rollback restored an earlier one)."""
    note: str = ""
    """What happened, in words."""


def scope_filter(scope: str | None) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition (and its parameters) selecting the choices of ``scope``.

    >>> scope_filter("task:translate")
    ('task = ?', ('translate',))

    Raises:
        ConfigError: a scope that is not ``global``, ``task:NAME`` or ``user:NAME``.
    """
    if scope in (None, "global"):
        return "1", ()
    assert scope is not None
    kind, _, name = scope.partition(":")
    if kind not in ("task", "user") or not name or len(name) > MAX_LABEL:
        raise ConfigError(
            f"scope: {scope!r} is not global, task:NAME or user:NAME (a name of 1 to {MAX_LABEL} characters)",
            parameter="scope",
            value=scope,
        )
    return f"{kind} = ?", (name,)


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
                self._prepare()
            except sqlite3.Error:
                self._conn.close()
                raise

    def _prepare(self) -> None:
        """Journal mode, schema and migration. Every step is idempotent: when several
        processes open one file at once SQLite can answer "database is locked" at once,
        without waiting for the busy timeout (switching to WAL, or a read lock that
        must become a write lock), so that answer is retried for up to 30 s."""
        deadline = time.monotonic() + 30.0
        while True:
            try:
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = FULL")  # an acknowledged choice survives a power cut
                self._conn.execute("PRAGMA foreign_keys = ON")
                with self._lock:
                    self._conn.executescript(_SCHEMA)
                    self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        def missing() -> list[tuple[str, str]]:
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(choices)")}
            return [(name, sql_type) for name, sql_type in _ADDED_COLUMNS if name not in have]

        if missing():  # an older file: add the columns under the write lock (another process may be at it too)
            with self._transaction() as cur:
                for name, sql_type in missing():
                    cur.execute(f"ALTER TABLE choices ADD COLUMN {name} {sql_type}")
        self._conn.executescript(_SCOPE_INDEXES)

    def close(self) -> None:
        self._conn.close()

    def data_version(self) -> int:
        """SQLite's ``data_version``: it changes when another connection (another
        process, ``nbest prefs rollback``) commits to the log; cheap to poll."""
        with self._lock, _translated(self.path, "read the log's version"):
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

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
        group: Sequence[int] | None = None,
        task: str | None = None,
    ) -> int:
        """Log that a person chose candidate ``chosen`` (its index) of ``result``;
        the new row's id. The choice is on disk when this returns.

        ``group`` lists the candidates of the card the person picked (equivalent
        answers shown as one; the chosen one is among them, added if missing): in
        fitting, the group beats the candidates outside it, with no preference
        among its members. ``task`` (default: the result's ``metadata["task"]``
        when it is a short string) scopes the choice for per-task learning.

        Raises:
            ConfigError: ``chosen``, ``ranking`` or ``group`` name no candidate of the
                result, the ranking or group repeats one, or ``task``/``user`` is
                longer than 200 characters.
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
            ranking = _distinct_indices("ranking", ranking, by_index)
            if ranking and ranking[0] != chosen:
                raise ConfigError(
                    f"ranking: must start with the chosen candidate {chosen} (got {ranking})", parameter="ranking", value=ranking
                )
        if group is not None:
            group = _distinct_indices("group", group, by_index)
            group = (group if chosen in group else [chosen, *group]) if group else None
        if task is None and isinstance(meta_task := result.metadata.get("task"), str) and 0 < len(meta_task) <= MAX_LABEL:
            task = meta_task
        for name, label in (("task", task), ("user", user)):
            if label is not None and len(label) > MAX_LABEL:
                raise ConfigError(f"{name}: at most {MAX_LABEL} characters (got {len(label)})", parameter=name)
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
            task or None,
            json.dumps(group) if group is not None else None,
        )
        with self._lock, _translated(self.path, "log the choice"), self._transaction() as cur:
            cur.execute(
                "INSERT INTO choices (created, request_id, prompt, n, chosen, chosen_rank, top_index, ranking, edited_text,"
                " user, result, task, grp) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
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

    def withdraw(self, choice_id: int) -> bool:
        """Mark choice ``choice_id`` as withdrawn (the person undid it): it stays in
        the log with the time it was withdrawn, and is left out of counts, pages and
        fitting. False for an unknown id; withdrawing twice keeps the first time.

        Raises:
            StorageError: the log could not be written.
        """
        with self._lock, _translated(self.path, "withdraw the choice"), self._transaction() as cur:
            cur.execute("UPDATE choices SET withdrawn = ? WHERE id = ? AND withdrawn IS NULL", (time.time(), int(choice_id)))
            if cur.rowcount:
                return True
            return cur.execute("SELECT 1 FROM choices WHERE id = ?", (int(choice_id),)).fetchone() is not None

    def count(self, scope: str | None = None, *, include_withdrawn: bool = False) -> int:
        """How many choices are logged (in ``scope``: ``global``, ``task:NAME``, ``user:NAME``;
        withdrawn ones only with ``include_withdrawn``)."""
        where, params = self._where(scope, include_withdrawn)
        with self._lock, _translated(self.path, "count the choices"):
            return int(self._conn.execute(f"SELECT COUNT(*) FROM choices WHERE {where}", params).fetchone()[0])

    @staticmethod
    def _where(scope: str | None, include_withdrawn: bool) -> tuple[str, tuple[Any, ...]]:
        where, params = scope_filter(scope)
        if not include_withdrawn:
            where += " AND withdrawn IS NULL"
        return where, params

    def latest(self, scope: str | None = None, limit: int = 5_000) -> list[Choice]:
        """The latest ``limit`` standing choices of ``scope``, oldest first (what a refit reads)."""
        where, params = self._where(scope, False)
        with self._lock, _translated(self.path, "read the choices"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM choices WHERE {where} ORDER BY id DESC LIMIT ?", (*params, int(limit))
            ).fetchall()
        return [_choice(row) for row in reversed(rows)]

    def page(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        max_bytes: int | None = None,
        scope: str | None = None,
        include_withdrawn: bool = False,
    ) -> list[Choice]:
        """Choices, oldest first, ``limit`` of them from ``offset``; with ``max_bytes``,
        fewer when their Results' JSON would pass that many bytes (always at least one):
        the next page starts at ``offset + len(page)``. Withdrawn choices are left out
        unless ``include_withdrawn``; ``scope`` keeps those of one task or user."""
        if offset < 0 or limit < 0:
            raise ConfigError("offset and limit must not be negative", parameter="offset" if offset < 0 else "limit")
        where, params = self._where(scope, include_withdrawn)
        rows: list[tuple[Any, ...]] = []
        size = 0
        with self._lock, _translated(self.path, "read the choices"):
            cursor = self._conn.execute(
                f"SELECT {_COLUMNS}, length(result) FROM choices WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            for row in cursor:  # read one row at a time: a page never holds more than max_bytes of Results
                size += row[-1]
                if max_bytes is not None and rows and size > max_bytes:
                    break
                rows.append(row[:-1])
            cursor.close()
        return [_choice(row) for row in rows]

    def __iter__(self) -> Iterator[Choice]:
        return self.iter()

    def iter(self, scope: str | None = None, *, include_withdrawn: bool = False) -> Iterator[Choice]:
        """Every choice (of ``scope``), oldest first, read a bounded page at a time."""
        offset = 0
        while page := self.page(offset, 500, max_bytes=16_000_000, scope=scope, include_withdrawn=include_withdrawn):
            yield from page
            offset += len(page)

    # -- ranker versions -------------------------------------------------------

    def save_version(
        self,
        scope: str,
        config: dict[str, Any],
        *,
        choices: int,
        agreement: float | None = None,
        baseline: float | None = None,
        status: RankerStatus = "current",
        note: str = "",
        seen: int | None = None,
    ) -> RankerVersion:
        """Add a ranker version to ``scope``'s history; a ``current`` one supersedes
        the scope's current version. ``seen`` is the scope's choice count at the time
        (default ``choices``): the learner counts new choices from it.

        Raises:
            ConfigError: a bad scope or status.
            StorageError: the log could not be written.
        """
        scope_filter(scope)
        if status not in ("current", "superseded", "kept-out", "rolled-back"):
            raise ConfigError(f"status: unknown {status!r}", parameter="status", value=status)
        with self._lock, _translated(self.path, "save the ranker"), self._transaction() as cur:
            if status == "current":
                cur.execute("UPDATE rankers SET status = 'superseded' WHERE scope = ? AND status = 'current'", (scope,))
            return self._insert_version(cur, scope, config, choices, agreement, baseline, status, note, seen)

    def _insert_version(
        self,
        cur: sqlite3.Cursor,
        scope: str,
        config: dict[str, Any],
        choices: int,
        agreement: float | None,
        baseline: float | None,
        status: str,
        note: str,
        seen: int | None,
    ) -> RankerVersion:
        row = (scope, time.time(), json.dumps(config, sort_keys=True), choices, agreement, baseline, status, note,
               choices if seen is None else seen)  # fmt: skip
        cur.execute(
            "INSERT INTO rankers (scope, created, config, choices, agreement, baseline, status, note, seen)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            row,
        )
        return _version((int(cur.lastrowid or 0), *row[:-1]))

    def versions(self, scope: str | None = None) -> list[RankerVersion]:
        """The saved ranker versions (of ``scope``), oldest first."""
        if scope is not None:
            scope_filter(scope)
        where, params = ("scope = ?", (scope,)) if scope is not None else ("1", ())
        with self._lock, _translated(self.path, "read the ranker history"):
            rows = self._conn.execute(f"SELECT {_VERSION_COLUMNS} FROM rankers WHERE {where} ORDER BY version", params)
            return [_version(row) for row in rows.fetchall()]

    def version(self, version: int) -> RankerVersion | None:
        """Ranker version ``version``, or None."""
        with self._lock, _translated(self.path, "read the ranker history"):
            row = self._conn.execute(f"SELECT {_VERSION_COLUMNS} FROM rankers WHERE version = ?", (int(version),)).fetchone()
        return _version(row) if row else None

    def current_version(self, scope: str = "global") -> RankerVersion | None:
        """The version that ranks ``scope``'s requests now, or None (nothing learned: the base ranker)."""
        scope_filter(scope)
        with self._lock, _translated(self.path, "read the ranker history"):
            row = self._conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM rankers WHERE scope = ? AND status = 'current' ORDER BY version DESC LIMIT 1",
                (scope,),
            ).fetchone()
        return _version(row) if row else None

    def last_seen(self, scope: str = "global") -> int:
        """The scope's choice count when its latest version (learned, kept out or restored) was saved; 0 if none."""
        with self._lock, _translated(self.path, "read the ranker history"):
            row = self._conn.execute(
                "SELECT seen FROM rankers WHERE scope = ? ORDER BY version DESC LIMIT 1", (scope,)
            ).fetchone()
        return int(row[0]) if row else 0

    def rollback(self, version: int) -> RankerVersion:
        """Make ranker ``version``'s config current again in its scope, exactly: a new
        version with the same config JSON (noted ``rollback to version V``); the version
        it replaces is marked ``rolled-back``. Returns the new version (``version`` itself,
        unchanged, when it is its scope's current one already).

        Raises:
            ConfigError: no such version.
            StorageError: the log could not be written.
        """
        with self._lock, _translated(self.path, "roll the ranker back"), self._transaction() as cur:
            row = cur.execute(f"SELECT {_VERSION_COLUMNS} FROM rankers WHERE version = ?", (int(version),)).fetchone()
            if row is None:
                known = [r[0] for r in cur.execute("SELECT version FROM rankers ORDER BY version DESC LIMIT 10")]
                raise ConfigError(
                    f"version: no ranker version {version} in {self.path}"
                    + (f" (latest: {', '.join(map(str, known))})" if known else " (no ranker has been learned yet)"),
                    parameter="version",
                    value=version,
                )
            old = _version(row)
            if old.status == "current":
                return old  # it ranks its scope already: nothing to restore
            cur.execute("UPDATE rankers SET status = 'rolled-back' WHERE scope = ? AND status = 'current'", (old.scope,))
            where, params = scope_filter(old.scope)
            seen = int(cur.execute(f"SELECT COUNT(*) FROM choices WHERE {where} AND withdrawn IS NULL", params).fetchone()[0])
            return self._insert_version(
                cur, old.scope, old.config, old.choices, old.agreement, old.baseline, "current",
                f"rollback to version {old.version}", seen,
            )  # fmt: skip


def _prompt_json(prompt: Prompt) -> Any:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


_COLUMNS = "id, created, request_id, chosen, chosen_rank, ranking, edited_text, user, result, grp, task, withdrawn"
_VERSION_COLUMNS = "version, scope, created, config, choices, agreement, baseline, status, note"


def _version(row: tuple[Any, ...]) -> RankerVersion:
    version, scope, created, config, choices, agreement, baseline, status, note = row
    return RankerVersion(
        version=version, scope=scope, created=created, config=json.loads(config), choices=choices,
        agreement=agreement, baseline=baseline, status=status, note=note,
    )  # fmt: skip


def _choice(row: tuple[Any, ...]) -> Choice:
    cid, created, request_id, chosen, chosen_rank, ranking, edited, user, result, grp, task, withdrawn = row
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
        group=json.loads(grp) if grp else None,
        task=task,
        withdrawn=withdrawn,
    )
