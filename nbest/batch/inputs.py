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

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import Field, create_model, field_validator, model_validator

from nbest._json import MAX_DEPTH, MAX_INT_DIGITS, MAX_LINE_BYTES, load_line, numbered_lines
from nbest.errors import ConfigError
from nbest.types import ChatMessage, NbestModel, Prompt, Request, SamplingParams

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_LINE_BYTES", "BadLine", "BatchLine", "ParsedInput", "load_line", "read_input"]

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
    """Every usable request of an input file, and the bad lines."""

    requests: list[Request]
    bad: list[BadLine]


def _lines(path: Path, limit: int) -> Iterator[tuple[int, bytes | int]]:
    """Each line's number and bytes, or its length in bytes when it is longer than ``limit``."""
    try:
        with path.open("rb") as f:
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


def read_input(path: Path, base: Request, *, max_n: int) -> ParsedInput:
    """Parse every line of ``path`` against the run's settings ``base``.

    Blank lines are skipped. Bad lines (a line that is not UTF-8 included) are
    collected, not raised.

    Raises:
        ConfigError: the file is missing or unreadable, two lines share an id
            (the message names both line numbers), or ``max_n`` is not a whole
            number of at least 1.
    """
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError(f"max_n: must be a whole number of at least 1 (got {max_n!r})", parameter="max_n", value=max_n)
    requests: list[Request] = []
    bad: list[BadLine] = []
    seen: dict[str, int] = {}
    for lineno, raw in _lines(path, MAX_LINE_BYTES):
        if isinstance(raw, int):
            bad.append(BadLine(line=lineno, reason=f"a line of {raw} bytes; at most {MAX_LINE_BYTES}", text=""))
            continue
        try:
            text = raw.removeprefix(_BOM).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            shown = raw.decode("utf-8", errors="replace").strip()[:200]
            bad.append(BadLine(line=lineno, reason=f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})", text=shown))
            continue
        if not text:
            continue
        try:
            request = parse_line(text, lineno, base, max_n)
        except (ConfigError, ValueError, TypeError, RecursionError) as exc:
            bad.append(BadLine(line=lineno, reason=str(exc) or type(exc).__name__, text=text[:200]))
            continue
        if request.id in seen:
            raise ConfigError(
                f"input: duplicate id {request.id!r} on lines {seen[request.id]} and {lineno}; ids must be unique",
                parameter="id",
                value=request.id,
            )
        seen[request.id] = lineno
        requests.append(request)
    return ParsedInput(requests=requests, bad=bad)
