r"""Pulling a short, comparable answer out of a candidate's text.

An *extractor* maps a candidate's text to the answer it gives (or None when
it gives none); :func:`normalize_answer` then makes equal answers compare
equal. Majority voting groups candidates by ``normalize_answer(extract(text))``.

Built-in extractors, by name (:func:`get_extractor`):

==============  ==============================================================
``number``      the last number: ``1,000`` / ``-3.5`` / ``3/4`` / ``$12`` / ``50%``
``boxed``       the content of the last ``\boxed{...}`` (or ``\fbox{...}``)
``choice``      a multiple-choice letter (``A``-``J``): "the answer is (C)", "C)"
``first_line``  the first non-empty line
``text``        the whole text
``auto``        boxed, else the last number, else the whole text
``regex:PAT``   group 1 of the last match of PAT (group 0 if it has no group)
``json:FIELD``  a field of the last JSON object in the text (``a.b`` for nesting)
==============  ==============================================================

Bounded work: ``regex:`` patterns run on RE2 (the ``google-re2`` package), whose
matching time is linear in the text, so no pattern can backtrack for hours;
RE2 has no backreferences or lookaround, and such a pattern is refused with a
ConfigError. A number is read as a number only up to :data:`MAX_NUMBER_DIGITS`
digits and exponent (``1e999999999`` is compared as text, never evaluated).

>>> last_number("It costs $1,250.00 in total.")
'1250'
>>> normalize_answer(" Paris. ") == normalize_answer("paris")
True
>>> normalize_answer("12.0") == normalize_answer("12")
True
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from nbest.errors import ConfigError

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "auto",
    "boxed",
    "choice",
    "first_line",
    "get_extractor",
    "json_field",
    "last_number",
    "normalize_answer",
    "normalize_number",
    "regex",
    "whole_text",
]

Extractor = Callable[[str], str | None]
"""Text in, answer out (None: the text gives no answer)."""

_MINUS = "-−–"  # ASCII hyphen, Unicode minus, en dash
_NUMBER = re.compile(
    rf"""
    (?<![\w.,/])                              # not inside a word, a decimal or a fraction
    (?P<sign>[{_MINUS}+])?\s?
    (?P<cur>[$€£¥])?\s?
    (?P<sign2>[{_MINUS}])?
    (?P<num>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    (?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?
    (?![\d])
    """,
    re.VERBOSE,
)
_NUMERIC = re.compile(
    rf"^(?P<sign>[{_MINUS}+])?(?P<cur>[$€£¥])?(?P<sign2>[{_MINUS}])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+|\d+\.)(?:/(?P<den>\d+(?:\.\d+)?))?"
    r"(?P<exp>[eE][-+]?\d+)?%?$"
)
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_SPACE = re.compile(r"\s+")
_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’«»…¿¡")


MAX_NUMBER_DIGITS = 400
"""Most digits (numerator and denominator together) and largest exponent a number may
have to be normalised as a number; a longer one is left as text."""


def _canonical(value: Fraction) -> str:
    """A Fraction as the shortest exact text: ``12``, ``0.75``, ``-1/3``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # a finite decimal
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value.numerator}/{value.denominator}"


def _to_fraction(num: str, den: str | None, negative: bool, exp: str | None = None) -> Fraction | None:
    digits = sum(ch.isdigit() for ch in num) + (sum(ch.isdigit() for ch in den) if den else 0)
    if digits > MAX_NUMBER_DIGITS or (exp and len(exp) > 8) or (exp and abs(int(exp[1:])) > MAX_NUMBER_DIGITS):
        return None  # measured before anything is evaluated: 1e999999999 would take hours
    try:
        value = Fraction(Decimal(num.replace(",", "")))
        if exp:
            value *= Fraction(10) ** int(exp[1:])
        if den is not None:
            d = Fraction(Decimal(den))
            if d == 0:
                return None
            value /= d
    except (InvalidOperation, ValueError, ZeroDivisionError, OverflowError):
        return None
    return -value if negative else value


def normalize_number(text: str) -> str | None:
    """The canonical form of a number written as ``text``, or None if it is not one.

    Thousands separators, a currency sign, a trailing ``%`` or ``.`` and
    trailing zeros go; fractions become decimals when they are finite.

    >>> [normalize_number(t) for t in ["12.0", "1,000", "-$3.50", "3/4", "1/3", "2e3", "ten"]]
    ['12', '1000', '-3.5', '0.75', '1/3', '2000', None]
    """
    s = text.strip().replace(" ", "").rstrip(".") if text.strip() not in ("", ".") else ""
    m = _NUMERIC.match(s)
    if not m:
        return None
    negative = bool(m["sign"] and m["sign"] in _MINUS) != bool(m["sign2"])
    value = _to_fraction(m["num"].rstrip("."), m["den"], negative, m["exp"])
    return None if value is None else _canonical(value)


def last_number(text: str) -> str | None:
    """The last number in ``text``, canonical (see :func:`normalize_number`).

    >>> [last_number(t) for t in ["so 17 * 3 = 51.", "a loss of -3.5 points", "3/4 of it", "none"]]
    ['51', '-3.5', '0.75', None]
    """
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    negative = bool(m["sign"] and m["sign"] in _MINUS) != bool(m["sign2"])
    value = _to_fraction(m["num"], m["den"], negative)
    return None if value is None else _canonical(value)


def boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` or ``\fbox{...}`` (nested braces kept).

    >>> boxed(r"so $\boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                content = text[i:j].strip()
                return content or None
    return None


_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*(?:option\s*)?[:\-]?\s*\(?\**([A-J])\b\)?", re.IGNORECASE),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*\**([A-J])\**\s*(?:[.):]|$)", re.MULTILINE),
    re.compile(r"\boption\s+([A-J])\b", re.IGNORECASE),
]


def choice(text: str) -> str | None:
    """A multiple-choice letter (A-J), upper case.

    Tried in order: "answer is C" / "Answer: (c)", then the last "(C)", then a
    line that starts with "C." / "C)" / "C:" or is just "C", then "option C".

    >>> [choice(t) for t in ["The answer is (b).", "I think (A) fits, no, (D)", "C) 42", "Option E.", "none"]]
    ['B', 'D', 'C', 'E', None]
    """
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def first_line(text: str) -> str | None:
    """The first non-empty line, stripped.

    >>> first_line("\\n  Paris\\nIt is the capital.")
    'Paris'
    """
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return None


def whole_text(text: str) -> str | None:
    """The whole text, stripped (None when empty)."""
    return text.strip() or None


def auto(text: str) -> str | None:
    r"""``\boxed{...}`` if present, else the last number, else the whole text.

    >>> [auto(t) for t in [r"2+2=\boxed{4}, not 5", "It is 51.", "Paris"]]
    ['4', '51', 'Paris']
    """
    return boxed(text) or last_number(text) or (text.strip() or None)


def regex(pattern: str, flags: int = 0) -> Extractor:
    """An extractor returning group 1 (or the whole match) of the last match of ``pattern``.

    The pattern runs on RE2 (linear time in the text: no pattern can backtrack
    for hours); ``flags`` may hold ``re.IGNORECASE``, ``re.MULTILINE`` and ``re.DOTALL``.

    >>> regex(r"Final: (\\w+)")("Final: yes ... Final: no")
    'no'
    >>> regex(r"(?<=x)y")
    Traceback (most recent call last):
    ...
    nbest.errors.ConfigError: extract: regex '(?<=x)y' is not supported by RE2 (no lookaround or backreferences)

    Raises:
        ConfigError: the pattern does not compile, uses what RE2 lacks
            (lookaround, backreferences), or other flags are given.
    """
    compiled = _compile(pattern, flags)
    group = 1 if compiled.groups else 0

    def extract(text: str) -> str | None:
        matches = list(compiled.finditer(text))
        if not matches:
            return None
        found = matches[-1].group(group)
        return found.strip() if found is not None and found.strip() else None

    extract.__name__ = f"regex:{pattern}"
    return extract


def _compile(pattern: str, flags: int) -> Any:
    """``pattern`` compiled by RE2, after Python's ``re`` checked its syntax (for its clear messages)."""
    import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints

    inline = {re.IGNORECASE: "i", re.MULTILINE: "m", re.DOTALL: "s"}
    if flags & ~sum(inline):
        raise ConfigError("extract: regex flags may be IGNORECASE, MULTILINE and DOTALL", parameter="extract", value=flags)
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConfigError(f"extract: bad regex {pattern!r}: {exc}", parameter="extract", value=pattern) from None
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20  # a pattern whose program would outgrow 8 MB is refused
    prefix = "".join(letter for flag, letter in inline.items() if flags & flag)
    try:
        return re2.compile(f"(?{prefix}){pattern}" if prefix else pattern, options=options)
    except re2.error:
        raise ConfigError(
            f"extract: regex {pattern!r} is not supported by RE2 (no lookaround or backreferences)",
            parameter="extract",
            value=pattern,
        ) from None


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = text.find("{")
    while i >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        found.append(obj)
        i = text.find("{", end)
    return found


def json_field(field: str) -> Extractor:
    """An extractor returning ``field`` of the last JSON object in the text that has it.

    Dots reach into nested objects (``"result.answer"``); non-string values
    come back as JSON text.

    >>> json_field("answer")('Here: ```json\\n{"answer": 42, "why": "..."}\\n```')
    '42'

    Raises:
        ConfigError: an empty field name.
    """
    if not field or any(not part for part in field.split(".")):
        raise ConfigError(
            f"extract: bad JSON field {field!r}; use a name like 'answer' or 'result.answer'", parameter="extract", value=field
        )
    path = field.split(".")

    def extract(text: str) -> str | None:
        for obj in reversed(_json_objects(text)):
            value: Any = obj
            for part in path:
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                if value is None:
                    return None
                return value if isinstance(value, str) else json.dumps(value)
        return None

    extract.__name__ = f"json:{field}"
    return extract


EXTRACTORS: dict[str, Extractor] = {
    "auto": auto,
    "boxed": boxed,
    "choice": choice,
    "first_line": first_line,
    "number": last_number,
    "text": whole_text,
}
"""Extractors by name; ``regex:PATTERN`` and ``json:FIELD`` take an argument."""


def get_extractor(spec: str | Extractor) -> Extractor:
    """An extractor from its name (see the table above) or a callable, as is.

    >>> get_extractor("json:answer")('{"answer": "B"}')
    'B'

    Raises:
        ConfigError: unknown name, bad regex, empty JSON field.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"extract: expected a name or a callable, got {spec!r}", parameter="extract", value=spec)
    name, sep, arg = spec.partition(":")
    if name == "regex" and sep:
        return regex(arg)
    if name == "json" and sep:
        return json_field(arg)
    if sep or name not in EXTRACTORS:
        known = ", ".join([*sorted(EXTRACTORS), "regex:PATTERN", "json:FIELD"])
        raise ConfigError(f"extract: unknown extractor {spec!r}; known: {known}", parameter="extract", value=spec)
    return EXTRACTORS[name]


def normalize_answer(answer: str) -> str:
    r"""Make equal answers compare equal.

    Numbers become canonical (``"12.0"``, ``"$12"``, ``"12"`` -> ``"12"``); LaTeX
    ``\frac{a}{b}`` / ``\text{...}`` and surrounding ``$`` are unwrapped; other
    text is case-folded, punctuation removed and white space collapsed.

    >>> [normalize_answer(t) for t in ["12.0", r"\frac{3}{4}", "  New   York. ", "U.S.A."]]
    ['12', '0.75', 'new york', 'usa']
    """
    s = answer.strip().strip("$").strip()
    s = _FRAC.sub(r"\1/\2", s)
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("{", "").replace("}", "")
    number = normalize_number(s)
    if number is not None:
        return number
    return _SPACE.sub(" ", s.translate(_PUNCT)).strip().casefold()
