"""One JSON value from a line of a file the user gave (a batch input, an eval
dataset), under limits checked while it is parsed, so that no line can crash a
run or make a Result that cannot be written: numbers finite (no ``NaN``,
``Infinity`` or ``1e999``), integers of at most :data:`MAX_INT_DIGITS` digits
(checked before converting: Python's ``int()`` is quadratic in the digits),
numbers written with at most 100 characters, values nested at most
:data:`MAX_DEPTH` deep, strings valid Unicode (no lone ``\\ud800`` surrogate
escapes). HTTP bodies have their own reader (``nbest.server.service.read_json``:
400/422 naming the field, 64-bit integers).

    >>> load_line('{"id": "q1", "prompt": "hi", "metadata": {"k": [1, 2.5]}}')
    {'id': 'q1', 'prompt': 'hi', 'metadata': {'k': [1, 2.5]}}
    >>> load_line('{"id": "q1", "seed": NaN}')
    Traceback (most recent call last):
    nbest.errors.ConfigError: NaN is not a number here; numbers must be finite
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from nbest.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_LINE_BYTES", "load_line", "numbered_lines"]

MAX_LINE_BYTES = 16 * 2**20
"""Longest line, in bytes (16 MiB); a longer line is a bad line, and memory holds
at most this much of it at a time."""

MAX_DEPTH = 32
"""Deepest nesting of objects and lists in one line."""
MAX_INT_DIGITS = 64
"""Most digits of an integer in one line."""
_MAX_NUMBER_CHARS = 100
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def numbered_lines(f: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | int]]:
    """Each line's number (from 1) and bytes, or its length in bytes when it is longer
    than ``limit`` (read no more than ``limit`` bytes at a time).

    >>> import io
    >>> list(numbered_lines(io.BytesIO(b"ab\\n" + b"x" * 9 + b"\\ncd"), limit=4))
    [(1, b'ab\\n'), (2, 10), (3, b'cd')]
    """
    lineno = 0
    while line := f.readline(limit + 1):
        lineno += 1
        if len(line) <= limit or (line.endswith(b"\n") and len(line) == limit + 1):
            yield lineno, line
            continue
        size = len(line)
        while not line.endswith(b"\n") and (line := f.readline(limit)):
            size += len(line)
        yield lineno, size


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ConfigError(f"an integer with {digits} digits; at most {MAX_INT_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > _MAX_NUMBER_CHARS:
        raise ConfigError(f"a number written with {len(text)} characters; at most {_MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise ConfigError(f"{text} is out of range; numbers must be finite")
    return value


def _constant(name: str) -> Any:
    raise ConfigError(f"{name} is not a number here; numbers must be finite")


def load_line(text: str) -> Any:
    """One JSON value, under the limits of the module docs.

    Raises:
        ConfigError: invalid JSON, or a value over a limit (the message says which).
    """
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"values nested too deeply; at most {MAX_DEPTH} levels") from None
    strings = _SURROGATE_ESCAPE.search(text) is not None  # only \\u escapes can make a lone surrogate
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise ConfigError(f"values nested too deeply; at most {MAX_DEPTH} levels")
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise ConfigError(f"values nested too deeply; at most {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif strings and isinstance(value, str) and (bad := _SURROGATE.search(value)):
            raise ConfigError(f"a string holds a lone UTF-16 surrogate (\\u{ord(bad.group()):04x}); text must be valid Unicode")
    return data
