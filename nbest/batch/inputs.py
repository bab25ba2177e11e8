"""Reading a batch input file: one JSON object per line.

Each line holds an ``id`` (a string or an integer; the line number,
``"line-N"``, when left out), a ``prompt`` (text) or ``messages`` (chat
messages), and optional per-line overrides of the run's settings::

    {"id": "q1", "prompt": "What is 17 * 3?"}
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "n": 4, "temperature": 0.7}

A line that is not valid JSON, or that fails validation, is a *bad line*: it
is reported with its line number and the reason, and the other lines still
run. Two lines with the same id are a user error for the whole file
(:class:`~nbest.errors.ConfigError`), found before anything is generated.

A file is read twice, one line at a time, so that its number of lines costs
no memory beyond 16 bytes per id: :func:`check_input` checks every line
(bad lines handed on as found, ids kept as fingerprints, duplicates refused)
and :meth:`CheckedInput.requests` then parses the lines again, lazily, as a
run takes them. Memory of a run: O(in-flight window + ids), not O(lines).
:func:`read_input` keeps everything in memory, for small files and tests.

Every line is read under limits checked while it is parsed, so that no line can
crash the run or make a Result that cannot be written: it is at most
:data:`MAX_LINE_BYTES` long (a longer one is a bad line, read no further than the
limit at a time), it must be UTF-8 (a
byte-order mark at the start is skipped), its numbers finite (no ``NaN``,
``Infinity`` or ``1e999``) with integers of at most :data:`MAX_INT_DIGITS`
digits, its values nested at most :data:`MAX_DEPTH` deep, and its strings valid
Unicode (no lone ``\\ud800`` surrogate escapes)::

    >>> load_line('{"id": "q1", "prompt": "hi", "metadata": {"k": [1, 2.5]}}')
    {'id': 'q1', 'prompt': 'hi', 'metadata': {'k': [1, 2.5]}}
    >>> load_line('{"id": "q1", "seed": NaN}')
    Traceback (most recent call last):
    nbest.errors.ConfigError: NaN is not a number here; numbers must be finite
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Collection, Container, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import Field, create_model, field_validator, model_validator

from nbest._json import MAX_DEPTH, MAX_INT_DIGITS, MAX_LINE_BYTES, load_line, numbered_lines
from nbest.errors import ConfigError
from nbest.types import ChatMessage, NbestModel, Prompt, Request, SamplingParams

__all__ = [
    "MAX_BAD_KEPT",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_LINE_BYTES",
    "BadLine",
    "BatchLine",
    "CheckedInput",
    "ParsedInput",
    "check_input",
    "load_line",
    "read_input",
]

_BOM = b"\xef\xbb\xbf"

# Every SamplingParams field, optional (None: the run's setting): what a line may
# override. BatchLine checks the values with SamplingParams itself.
if TYPE_CHECKING:
    _SamplingOverrides = NbestModel
else:
    _SamplingOverrides = create_model(
        "SamplingOverrides",
        __base__=NbestModel,
        **{
            name: (field.annotation | None, Field(default=None, description=field.description))
            for name, field in SamplingParams.model_fields.items()
        },
    )


class BatchLine(_SamplingOverrides):
    """One line of a batch input file: its prompt, and overrides of the run's
    ``n``, ``system`` and sampling settings (any SamplingParams field)."""

    id: str
    """Identifies the prompt; a rerun skips ids already in the output."""
    prompt: str | None = None
    """The prompt as text (give this or ``messages``)."""
    messages: list[ChatMessage] | None = None
    """The prompt as chat messages (give this or ``prompt``)."""
    n: int | None = Field(default=None, ge=1)
    """Candidates for this prompt (overrides ``-n``)."""
    system: str | None = None
    """System prompt for this line (overrides ``--system``)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Carried into the Result's ``metadata`` untouched."""

    @model_validator(mode="before")
    @classmethod
    def _check_sampling(cls, data: Any) -> Any:
        """Validate the overrides as SamplingParams does (``top_p: Input should be ...``)
        and keep its normal form (``"stop": "\\n"`` becomes ``["\\n"]``)."""
        if not isinstance(data, dict):
            return data
        given = {k: v for k, v in data.items() if k in SamplingParams.model_fields and v is not None}
        if not given:
            return data
        checked = SamplingParams(**given)
        return {**data, **{k: getattr(checked, k) for k in given}}

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' (text) or 'messages' (chat)")
        return self

    @property
    def the_prompt(self) -> Prompt:
        """The prompt, text or messages."""
        return self.prompt if self.prompt is not None else list(self.messages or [])

    def request(self, base: Request) -> Request:
        """``base`` (the run's settings) with this line's prompt and overrides.

        Raises:
            ConfigError: an override out of range.
        """
        sampling = {k: v for k in SamplingParams.model_fields if (v := getattr(self, k)) is not None}
        params = SamplingParams(**{**base.params.model_dump(), **sampling}) if sampling else base.params
        return Request(
            id=self.id,
            prompt=self.the_prompt,
            n=self.n if self.n is not None else base.n,
            params=params,
            system=self.system if self.system is not None else base.system,
            chat=base.chat,
            source=base.source,
            metadata={**base.metadata, **self.metadata},
        )


class BadLine(NbestModel):
    """A line that could not be used, and why."""

    line: int
    """1-based line number in the input file."""
    reason: str
    """What was wrong."""
    text: str
    """The line as read (cut to 200 characters)."""


class ParsedInput(NbestModel):
    """Every usable request of an input file, and every bad line: what
    :func:`read_input` returns, all in memory (see :class:`CheckedInput` for a
    file of any size)."""

    requests: list[Request]
    bad: list[BadLine]


MAX_BAD_KEPT = 100
"""Bad lines a :class:`CheckedInput` keeps in memory to show; every one goes to
``on_bad`` (the errors file), and all of them are counted."""

_FINGERPRINT_BYTES = 16

Stat = tuple[int, int, int, int]
"""What tells a file from a changed one: device, inode, size, modification time (ns)."""


class CheckedInput:
    """An input file checked line by line (:func:`check_input`), holding what
    the run needs and nothing of the size of a line.

    Memory: 16 bytes per usable line (a keyed fingerprint of its id), the first
    :data:`MAX_BAD_KEPT` bad lines and counters; not the Requests, which
    :meth:`requests` parses again, one at a time, as the run takes them. So a
    run's memory is O(in-flight window + ids), not O(lines)::

        checked = check_input(Path("in.jsonl"), base, max_n=64, on_bad=errors.append)
        print(checked.prompts, checked.bad_lines)
        for request in checked.requests(skip={"q1"}):   # lazily, in input order
            ...
    """

    def __init__(self, path: Path, base: Request, max_n: int) -> None:
        self.path = path
        self.base = base
        self.max_n = max_n
        self.prompts = 0
        """Usable lines (the prompts the file asks for)."""
        self.bad_lines = 0
        """Bad lines, all of them."""
        self.bad: list[BadLine] = []
        """The first :data:`MAX_BAD_KEPT` bad lines."""
        self._key = secrets.token_bytes(16)  # fingerprints no one can aim collisions at
        self._fingerprints = bytearray()
        self._stat: Stat | None = None

    def fingerprint(self, ident: str) -> bytes:
        """The 16-byte keyed hash of ``ident`` this file's ids are kept as."""
        data = ident.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=_FINGERPRINT_BYTES, key=self._key).digest()

    def already_done(self, done: Collection[str]) -> int:
        """How many of this file's ids are in ``done`` (the ids an output
        already holds): the prompts a resumed run skips."""
        if not done or not self.prompts:
            return 0
        import numpy as np

        mine = np.frombuffer(self._fingerprints, dtype=f"S{_FINGERPRINT_BYTES}")
        theirs = np.array([self.fingerprint(ident) for ident in done], dtype=f"S{_FINGERPRINT_BYTES}")
        return int(np.isin(mine, theirs).sum())

    def requests(self, skip: Container[str] = frozenset()) -> Iterator[Request]:
        """The usable lines' Requests, parsed again one at a time in input
        order, leaving out ids in ``skip``; bad lines are passed over (they
        were reported by :func:`check_input`).

        Raises:
            ConfigError: the file changed since it was checked (its size, time
                or inode, or a line's id is not the one checked): nothing
                unchecked runs; run again to check it anew.
        """
        position = 0
        for lineno, item in _parsed(self.path, self.base, self.max_n, self._opened_again):
            if isinstance(item, BadLine):
                continue
            at = position * _FINGERPRINT_BYTES
            if self._fingerprints[at : at + _FINGERPRINT_BYTES] != self.fingerprint(item.id):
                raise self._changed(f"line {lineno} is not the line checked")
            position += 1
            if item.id not in skip:
                yield item
        if position != self.prompts:
            raise self._changed(f"it has {position} usable line(s), {self.prompts} when checked")

    def _opened_first(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"input: {self.path} is not a regular file (a pipe?); it is read twice, "
                "once to check every line and once to run them: save it to a file first",
                parameter="input",
                value=str(self.path),
            )
        self._stat = _identity(st)

    def _opened_again(self, st: os.stat_result) -> None:
        if _identity(st) != self._stat:
            raise self._changed("its size, time or inode")

    def _changed(self, why: str) -> ConfigError:
        return ConfigError(
            f"input: {self.path} changed after it was checked ({why}); run the command again",
            parameter="input",
            value=str(self.path),
        )

    def _add(self, lineno: int, request: Request, check: Callable[[Request], object] | None) -> None:
        if check is not None:
            try:
                check(request)
            except ConfigError as exc:
                raise ConfigError(
                    f"input: line {lineno} (id {request.id!r}): {exc}", parameter=exc.parameter, value=exc.value
                ) from None
        self._fingerprints += self.fingerprint(request.id)
        self.prompts += 1

    def _add_bad(self, bad: BadLine, on_bad: Callable[[BadLine], object] | None) -> None:
        self.bad_lines += 1
        if len(self.bad) < MAX_BAD_KEPT:
            self.bad.append(bad)
        if on_bad is not None:
            on_bad(bad)

    def _refuse_duplicates(self) -> None:
        """Raise for two usable lines with the same id, naming the first line
        whose id an earlier line has, and that earlier line (what a reader
        holding every id would have found). The fingerprints are sorted (24
        bytes a line for the moment); the two lines are found by reading again,
        so only a file that fails pays for it."""
        if self.prompts < 2:
            return
        import numpy as np

        fingerprints = np.frombuffer(self._fingerprints, dtype=f"S{_FINGERPRINT_BYTES}")
        order = np.argsort(fingerprints, kind="stable")  # equal ones stay in input order
        ordered = fingerprints[order]
        same = ordered[1:] == ordered[:-1]
        del ordered
        if not same.any():
            return
        first_pair = same.copy()
        first_pair[1:] &= ~same[:-1]  # the first two lines of each group of equal ids
        starts = np.flatnonzero(first_pair)
        k = starts[np.argmin(order[starts + 1])]  # the group whose second line comes first
        one, two = int(order[k]), int(order[k + 1])
        found: dict[int, tuple[int, str]] = {}
        position = 0
        with contextlib.closing(_parsed(self.path, self.base, self.max_n, self._opened_again)) as items:
            for lineno, item in items:
                if isinstance(item, Request):
                    if position in (one, two):
                        found[position] = (lineno, item.id)
                        if len(found) == 2:
                            break
                    position += 1
        if len(found) < 2 or found[one][1] != found[two][1]:
            raise self._changed("a line's id is not the one checked")
        (line_one, ident), (line_two, _) = found[one], found[two]
        raise ConfigError(
            f"input: duplicate id {ident!r} on lines {line_one} and {line_two}; ids must be unique",
            parameter="id",
            value=ident,
        )


def _identity(st: os.stat_result) -> Stat:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _lines(
    path: Path, limit: int, opened: Callable[[os.stat_result], None] | None = None
) -> Generator[tuple[int, bytes | int], None, None]:
    """Each line's number and bytes, or its length in bytes when it is longer
    than ``limit``; ``opened`` is told the file's ``fstat`` once it is open
    (and may refuse it by raising)."""
    try:
        with path.open("rb") as f:
            if opened is not None:
                opened(os.fstat(f.fileno()))
            yield from numbered_lines(f, limit)
    except FileNotFoundError:
        raise ConfigError(f"input: no such file: {path}", parameter="input", value=str(path)) from None
    except IsADirectoryError:
        raise ConfigError(f"input: {path} is a folder, not a file", parameter="input", value=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"input: cannot read {path} ({exc.strerror or exc})", parameter="input", value=str(path)) from None


def parse_line(text: str, lineno: int, base: Request, max_n: int) -> Request:
    """One input line as a Request (see the module docs).

    Raises:
        ConfigError: the line is not a JSON object or does not validate.
    """
    data = load_line(text)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got {type(data).__name__}")
    data.setdefault("id", f"line-{lineno}")
    request = BatchLine.parse(data).request(base)
    if request.n > max_n:
        raise ConfigError(f"n: at most {max_n} candidates per prompt (got {request.n})", parameter="n", value=request.n)
    return request


def _parsed(
    path: Path, base: Request, max_n: int, opened: Callable[[os.stat_result], None] | None = None
) -> Generator[tuple[int, Request | BadLine], None, None]:
    """Each non-blank line's number and its Request or BadLine, one line at a
    time: the one parser of every pass over a file (``opened``: see :func:`_lines`)."""
    for lineno, raw in _lines(path, MAX_LINE_BYTES, opened):
        if isinstance(raw, int):
            yield lineno, BadLine(line=lineno, reason=f"a line of {raw} bytes; at most {MAX_LINE_BYTES}", text="")
            continue
        try:
            text = raw.removeprefix(_BOM).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            shown = raw.decode("utf-8", errors="replace").strip()[:200]
            yield lineno, BadLine(line=lineno, reason=f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})", text=shown)
            continue
        if not text:
            continue
        try:
            yield lineno, parse_line(text, lineno, base, max_n)
        except (ConfigError, ValueError, TypeError, RecursionError) as exc:
            yield lineno, BadLine(line=lineno, reason=str(exc) or type(exc).__name__, text=text[:200])


def check_input(
    path: Path,
    base: Request,
    *,
    max_n: int,
    check: Callable[[Request], object] | None = None,
    on_bad: Callable[[BadLine], object] | None = None,
) -> CheckedInput:
    """Check every line of ``path`` against the run's settings ``base``, one
    line at a time, before anything runs: the first pass of ``nbest batch``.

    Each line is parsed and dropped; a usable line's id is kept as a 16-byte
    fingerprint (for duplicates and resuming), ``check`` (e.g. the plan check
    of :func:`nbest.batch.runner.plan_check`) is called with its Request, and
    each bad line goes to ``on_bad`` as it is found (the errors file), counted.
    Blank lines are skipped. Memory: 16 bytes per usable line and the first
    :data:`MAX_BAD_KEPT` bad lines, whatever the number or size of the lines
    (a line is read at most :data:`MAX_LINE_BYTES` at a time); checking for
    duplicates sorts the fingerprints at the end (24 bytes per usable line).

    Raises:
        ConfigError: the file is missing, unreadable or not a regular file (a
            pipe cannot be read twice); two lines share an id (the message
            names both line numbers, the first line whose id an earlier one
            has); ``check`` refused a line (``input: line N (id 'x'): ...``);
            ``max_n`` is not a whole number of at least 1.
    """
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError(f"max_n: must be a whole number of at least 1 (got {max_n!r})", parameter="max_n", value=max_n)
    checked = CheckedInput(path, base, max_n)
    for lineno, item in _parsed(path, base, max_n, checked._opened_first):
        if isinstance(item, BadLine):
            checked._add_bad(item, on_bad)
        else:
            checked._add(lineno, item, check)
    checked._refuse_duplicates()
    return checked


def read_input(path: Path, base: Request, *, max_n: int) -> ParsedInput:
    """Parse every line of ``path`` against the run's settings ``base``, and
    keep them all: :func:`check_input`, then every Request and bad line in
    memory (O(lines): for a file of any size use :func:`check_input` and
    :meth:`CheckedInput.requests`, as ``nbest batch`` does).

    Blank lines are skipped. Bad lines (a line that is not UTF-8 included) are
    collected, not raised.

    Raises:
        ConfigError: as :func:`check_input`.
    """
    bad: list[BadLine] = []
    checked = check_input(path, base, max_n=max_n, on_bad=bad.append)
    return ParsedInput(requests=list(checked.requests()), bad=bad)
