"""Checking the calculations a candidate writes (:class:`ArithmeticCheck`, kind ``arithmetic``).

On word problems a small model often writes a wrong calculation (``12 × 4 = 46``)
or ends on an answer that does not follow from its own work. Such slips are
cheap to catch without a model: read the written calculations, evaluate them
exactly, and see whether the final answer is the result they led to. This is
the program-aided, verifier-style idea at its cheapest: a check of the work,
not of the answer, so it helps the other rerankers (log-probability, votes)
rather than replacing them. Offline, on 81 stored word-problem Results (n = 8,
``benchmarks/data/reasoning_tuning_n8_ladder0.3-0.7.jsonl.gz``), the 255 of 648
candidates with a false calculation ended on the right number (their last
number, as ``vote:number`` reads it) 1.6 % of the time, against 28.0 % for the
others and 32.2 % for the 338 whose calculations all hold.

A candidate's score, in [0, 1], is the mean of the checks that apply to it:

* ``statements`` — the share of its written calculations ``EXPR = NUMBER`` that
  hold. EXPR is numbers joined by ``+ - − × x * / ÷`` and powers (``2^3``,
  ``3**2``, ``5²``, ``2³``) with parentheses, under the usual precedence: a
  power binds tighter than ``×``, ``/`` and a sign (``-3^2`` is -9) and groups
  to the right (``2^3^2`` is ``2^9``). Numbers may carry thousands separators,
  decimals, a leading ``$`` or a trailing ``%`` (``50%`` is 0.5 inside an
  expression), and a minus sign (``10 - -2 = 12``, ``(-4) × 2 = -8``,
  ``5 - 8 = -3``). A chain ``5 + 4 = 9 - 2 = 7`` is two calculations, each later
  one starting from the result written before it (``= 8^2`` is not a written
  result). Evaluation is exact (:class:`fractions.Fraction`, never ``eval``).
  A whole-number result must be exact; a result written with ``d`` decimals
  holds when the exact value rounds to it at ``d`` decimals (``10 / 3 = 3.33``
  holds, ``10 / 3 = 3`` does not); a result written with ``%`` holds as the
  percentage or as the plain number (``1 / 4 = 25%``, ``15 / 60 × 100 = 25%``).
  Division by zero makes the calculation false. A power is computed only when
  its exponent is a whole number from 0 to :data:`MAX_EXPONENT` and its result
  fits in :data:`MAX_DIGITS` digits; any other power (``2^-1``, ``2^0.5``,
  ``9^99999999``) leaves its calculation unchecked, neither true nor false.
  ``x`` is *times* and ``**`` a power only between two numbers (``2 x 3``,
  ``3**2``; ``**5**`` is Markdown bold), so algebra (``3x + 2``) is not read as
  a calculation, and neither is an expression that starts right after a word or
  with an operator — save a minus sign written onto its number or ``(``
  (``-3 + 5 = 2``, ``-(2 + 1) × 2 = -6``) at the start of the text or after a
  space or ``(``, but not after a lone letter. So ``x - 3 = 2``, ``n - 1 = 4``,
  ``a-3=5`` and ``3x -2 + 5 = 10`` are not read. A list marker at the start of
  a line (``- ``, ``* ``, ``+ ``, ``• ``, ``1) ``, ``2. ``, after optional spaces)
  is not part of the calculation: the bullet ``- 3 + 5 = 8`` reads as
  ``3 + 5 = 8``. Nor are parentheses around or after one: a ``(`` that no ``)``
  closes at the start of the first expression, and at the end of the last
  result a ``)`` that no ``(`` opens or a ``(`` that opens a remark
  (``(3 + 5 = 8)``, ``so (that is 3 × 4 = 12).``, ``12 × 4 = 48 (correct)``);
  balanced ones keep their meaning (``(3 + 5) = 8``, ``3 × (4 + 1) = 15``).
* ``follows`` — with at least one calculation and a final answer (the last
  number, what ``vote:number`` extracts): whether the final answer is the last
  calculation's result.
* ``grounding`` — the share of the question's distinct numbers that the
  candidate uses; the question is the last paragraph (the text after the last
  blank line) of the prompt's text or last user message, so the numbers of a
  few-shot example before it do not count. Skipped when the question has no
  number.

A candidate to which no check applies scores None. ``Score.details`` carry the
parts: ``{"statements": 3, "false": 1, "follows": True, "grounding": 0.67}``
(None for a check that did not apply).

Bounded work for any text: only the first :data:`MAX_CHARS` characters are
read, at most :data:`MAX_STATEMENTS` calculations are checked, a number of more
than :data:`MAX_DIGITS` digits is not a number here, an expression of more than
:data:`MAX_OPERANDS` numbers is not checked, and neither is one with a power
whose exponent or result is past its bound (judged before the power is
computed). Pure Python, measured on a 2-core Intel Xeon (AVX-512 + AMX) at load
average 4: about 0.2 ms for a 60-token candidate (0.17 ms on average over 648
stored word-problem candidates), about 10 ms for 100,000 characters of
``1+1=2 `` (64 calculations from the first 4,000 characters), 0.13 ms for
100,000 digits. Powers past their bounds cost no more than other unread text:
at load average 1.3, 100,000 characters of ``9^99999999 = 1`` take about 4 ms
and of ``2^2^2^2^2^2^2 = 4`` about 11 ms, against 5.6 ms for ``1+1=2``.
Dropping list markers (in the tokenizer's pass) and parentheses (one pass over a
run's first and last segments) costs no more: at load average 7, 100,000
characters of lines ``- (1+1=2)`` take about 5 ms (64 calculations) against 6 ms
for ``1+1=2``, and 100,000 ``(`` about 4 ms.

>>> import anyio
>>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
>>> spec = CandidateSpec(index=0, params=SamplingParams())
>>> texts = ["3 × 4 = 12 apples, 12 + 5 = 17. The answer is 17.", "3 × 4 = 11, 11 + 5 = 16. The answer is 15."]
>>> cs = [Candidate(index=i, spec=spec, text=t) for i, t in enumerate(texts)]
>>> scores = anyio.run(ArithmeticCheck().score, Request(prompt="Tom has 3 bags of 4 apples and 5 more. How many?"), cs)
>>> [round(s.value, 3) for s in scores]
[1.0, 0.5]
>>> scores[1].details
{'statements': 2, 'false': 1, 'follows': False, 'grounding': 1.0}
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal, NamedTuple

import anyio.to_thread

from nbest.rerankers.base import CandidateCache, Reranker, cache_key
from nbest.rerankers.cluster import question_text
from nbest.rerankers.extract import last_number
from nbest.rerankers.registry import RERANKERS, RerankerConfig
from nbest.types import Candidate, Prompt, Request, Score

__all__ = [
    "INLINE_CHARS",
    "MAX_CHARS",
    "MAX_DIGITS",
    "MAX_EXPONENT",
    "MAX_OPERANDS",
    "MAX_STATEMENTS",
    "ArithmeticCheck",
    "ArithmeticConfig",
    "Statement",
    "check_text",
    "last_paragraph",
    "statements",
]

MAX_CHARS = 4_000
"""Characters of a candidate (and of the question) that are read; the rest is ignored, so a
100,000-character text costs what its first 4,000 do."""
MAX_STATEMENTS = 64
"""Calculations checked per candidate; later ones are not read."""
MAX_DIGITS = 15
"""Most digits (before and after the decimal point) a number may have; a longer one is not a
number for this check, so no calculation can grow past a few hundred digits."""
MAX_EXPONENT = 64
"""Largest exponent of a power that is evaluated (``2^64``); a larger, negative or fractional
exponent leaves the calculation unchecked. A power is evaluated only when its result also
fits in :data:`MAX_DIGITS` digits (numerator and denominator), estimated before computing it,
so ``9^99999999`` or ``2^2^2^2^2^2^2`` costs no more than ``2^3``."""
MAX_OPERANDS = 16
"""Most numbers in one calculation's expression; a longer expression is not checked."""
_MAX_TOKENS = 4 * MAX_OPERANDS
"""Most tokens (numbers, operators, parentheses) in one expression, so nesting, and the
evaluator's recursion, stay shallow."""
INLINE_CHARS = 1_000
"""Longest text :meth:`ArithmeticCheck.prepare` checks on the event loop (about 0.1 ms); a
longer one is checked in a worker thread (up to about 10 ms at :data:`MAX_CHARS`)."""

_TOKEN = re.compile(
    r"(?<![^\n])(?P<marker>[ \t]*(?:[-*+•]|\d{1,9}[.)])[ \t])"
    r"|[ \t]*(?:"
    r"(?P<num>\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?%?)"
    r"|(?P<bold>\*\*)"
    r"|(?P<op>[-+−*×/÷^])"
    r"|(?P<sym>[()=])"
    r"|(?P<latex>\\(?:times|cdot|div)(?![^\W\d_]))"
    r"|(?P<sup>[⁰¹²³⁴⁵⁶⁷⁸⁹]+)"
    r"|(?P<word>[^\W\d_]+(?:[ \t,.;:!?'\"]+[^\W\d_]+)*)"
    r"|(?P<other>[\s\S]))"
)
"""One token of a text, after spaces; every character falls in exactly one group (a run of
words and the punctuation between them is one token), so scanning is linear. At the start of
a line (of the text, or after a newline) a list marker is one token: ``- ``, ``* ``, ``+ ``,
``• ``, ``1. ``, ``2) `` (a minus written onto its number, ``-3``, is a sign, not a marker)."""
_OPERATORS = {
    "+": "+",
    "-": "-",
    "−": "-",
    "*": "*",
    "×": "*",
    "/": "/",
    "÷": "/",
    "^": "^",
    "\\times": "*",
    "\\cdot": "*",
    "\\div": "/",
}
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
_LIMIT = 10**MAX_DIGITS
"""A power's result must have a numerator and a denominator below this."""
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


class _Num(NamedTuple):
    plain: str
    """The number as written, without ``$``, ``%`` and separators (``25%`` is ``25``)."""
    decimals: int
    percent: bool

    @property
    def value(self) -> Fraction:
        return Fraction(self.plain)

    @property
    def key(self) -> str:
        """The number's canonical text, for comparing numbers without building Fractions
        (``012.50`` -> ``12.5``)."""
        whole, _, frac = self.plain.partition(".")
        whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
        return f"{whole}.{frac}" if frac else whole


class _Tok(NamedTuple):
    kind: str
    """``n`` number, ``o`` operator, ``(``, ``)``, ``=``, ``x`` (times or a word), ``p`` (``**``:
    a power or Markdown bold), ``b`` break."""
    op: str = ""
    num: _Num | None = None
    lead: bool = False
    """A minus sign that may start an expression (see :func:`_leading_minus`)."""


_BREAK = _Tok("b")


@dataclass(frozen=True)
class Statement:
    """One written calculation ``EXPR = RESULT``: the expression's exact value (None: division
    by zero), the result as written, and whether it holds."""

    value: Fraction | None
    result: Fraction
    holds: bool


def _number(text: str) -> _Tok:
    """A number token, or a break when it has more than :data:`MAX_DIGITS` digits."""
    percent = text.endswith("%")
    plain = text.strip("$%").replace(",", "")
    whole, _, frac = plain.partition(".")
    if len(whole) + len(frac) > MAX_DIGITS:
        return _BREAK
    return _Tok("n", num=_Num(plain, len(frac), percent))


def _tokens(text: str) -> list[_Tok]:
    """``text`` as tokens: numbers, operators, parentheses, ``=`` and breaks.

    Spaces and tabs separate nothing; a word, a newline and any other
    character are breaks (several in a row are one). ``x``/``X`` is the
    operator ``*`` and ``**`` the operator ``^`` only between a number (or
    ``)``) and a number (or ``(``); elsewhere ``x`` is a word and ``**``
    Markdown bold, both breaks. Superscript digits right after a number (or
    ``)``) are ``^`` and their number (``5²`` is ``5^2``); elsewhere a break.
    A list marker at the start of a line (``- ``, ``1) ``) is a break.
    """
    out: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        group = m.lastgroup
        if group == "num":
            out.append(_number(m.group(group)))
        elif group == "op" or group == "latex":
            op = _OPERATORS[m.group(group)]
            lead = op == "-" and _leading_minus(text, m.start(group))
            out.append(_Tok("o", op=op, lead=lead))
        elif group == "bold":
            out.append(_Tok("p"))
        elif (
            group == "sup"
            and out
            and out[-1].kind in ("n", ")")
            and (exp := _number(m.group(group).translate(_SUPERSCRIPTS))) is not _BREAK
        ):
            out.extend((_Tok("o", op="^"), exp))
        elif group == "sym":
            out.append(_Tok(m.group(group)))
        elif group == "word" and m.group(group) in ("x", "X"):
            out.append(_Tok("x"))
        elif not out or out[-1] is not _BREAK:
            out.append(_BREAK)
    for i, tok in enumerate(out):
        if tok.kind in ("x", "p"):
            between = 0 < i < len(out) - 1 and out[i - 1].kind in ("n", ")") and out[i + 1].kind in ("n", "(")
            out[i] = _Tok("o", op="*" if tok.kind == "x" else "^") if between else _BREAK
    return out


def _leading_minus(text: str, at: int) -> bool:
    """Whether the ``-`` at ``text[at]`` may be the sign that starts an expression: at the start
    of the text, after a space or ``(``, written onto a number or ``(`` (``-3``, ``-$3``,
    ``-(``, not the bullet ``- 3``), and not after a lone letter (``x -3``, ``3x -2``: algebra).
    """
    after = text[at + 1 : at + 2]
    if not (after.isdecimal() and after.isascii()) and after not in ("$", "("):
        return False
    if at == 0 or text[at - 1] == "(":
        return True
    if not text[at - 1].isspace():
        return False
    before = text[max(0, at - 64) : at].rstrip()
    return not (before and before[-1].isalpha() and (len(before) == 1 or not before[-2].isalpha()))


class _Parser:
    """A recursive-descent evaluator over one segment's tokens (``+ -`` below ``* /`` below
    unary minus below ``^``, which groups to the right; parentheses), exact with Fractions.
    ``parse`` gives None for a division by zero; ``ok`` is False when the tokens are not one
    whole expression; ``unchecked`` is True when a power was past its bounds (its value,
    and so the expression's, is then meaningless)."""

    def __init__(self, tokens: Sequence[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0
        self.binary = 0
        self.ok = True
        self.zero_division = False
        self.unchecked = False

    def parse(self) -> Fraction | None:
        value = self._sum()
        if self.i != len(self.tokens):
            self.ok = False
        return None if self.zero_division else value

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _sum(self) -> Fraction:
        value = self._product()
        while self.ok and (tok := self._peek()) is not None and tok.kind == "o" and tok.op in "+-":
            self.i += 1
            self.binary += 1
            right = self._product()
            value = value + right if tok.op == "+" else value - right
        return value

    def _product(self) -> Fraction:
        value = self._unary()
        while self.ok and (tok := self._peek()) is not None and tok.kind == "o" and tok.op in "*/":
            self.i += 1
            self.binary += 1
            right = self._unary()
            if tok.op == "*":
                value *= right
            elif right == 0:
                self.zero_division = True
            else:
                value /= right
        return value

    def _unary(self) -> Fraction:
        tok = self._peek()
        if tok is not None and tok.kind == "o" and tok.op == "-":
            self.i += 1
            return -self._unary()
        return self._power()

    def _power(self) -> Fraction:
        base = self._atom()
        tok = self._peek()
        if not self.ok or tok is None or tok.kind != "o" or tok.op != "^":
            return base
        self.i += 1
        self.binary += 1
        exponent = self._unary()  # right-associative: 2^3^2 is 2^(3^2); 2^-1 parses
        return self._raise(base, exponent)

    def _raise(self, base: Fraction, exponent: Fraction) -> Fraction:
        """``base ** exponent`` when the exponent is a whole number in [0, MAX_EXPONENT] and the
        result fits in MAX_DIGITS digits, judged before computing it; else ``unchecked``."""
        if self.unchecked or exponent.denominator != 1 or not 0 <= exponent <= MAX_EXPONENT:
            self.unchecked = True
            return Fraction(0)
        e = int(exponent)
        size = max(abs(base.numerator), base.denominator)  # >= 1
        if e * math.log10(size) > MAX_DIGITS + 1:  # over by more than the estimate could be off
            self.unchecked = True
            return Fraction(0)
        value = base**e  # at most about MAX_DIGITS + 2 digits
        if abs(value.numerator) >= _LIMIT or value.denominator >= _LIMIT:
            self.unchecked = True
            return Fraction(0)
        return value

    def _atom(self) -> Fraction:
        tok = self._peek()
        if tok is not None and tok.kind == "(":
            self.i += 1
            value = self._sum()
            closing = self._peek()
            if closing is None or closing.kind != ")":
                self.ok = False
                return Fraction(0)
            self.i += 1
            return value
        if tok is not None and tok.num is not None:
            self.i += 1
            return tok.num.value / 100 if tok.num.percent else tok.num.value
        self.ok = False
        return Fraction(0)


def _holds(value: Fraction | None, written: _Num, negative: bool) -> bool:
    """Whether the exact ``value`` is the result as written (see the module docstring)."""
    if value is None:
        return False
    result = -written.value if negative else written.value
    targets = [result / 100, result] if written.percent else [result]
    if written.decimals == 0:
        return value in targets
    half = Fraction(1, 2 * 10**written.decimals)
    return any(abs(value - t) <= half for t in targets)


def statements(text: str) -> list[Statement]:
    """The calculations written in ``text`` (its first :data:`MAX_CHARS` characters, at most
    :data:`MAX_STATEMENTS`), each checked.

    >>> [(str(s.value), s.holds) for s in statements("5 + 4 = 9 - 2 = 7, so 3 × (4 + 1) = 16; 10 / 3 = 3.33")]
    [('9', True), ('7', True), ('15', False), ('10/3', True)]
    >>> [s.holds for s in statements("2 x 3 = 6, 3x + 2 = 11, 7 / 0 = 7, $1,200 − $200 = $1,000")]
    [True, False, True]
    >>> [s.holds for s in statements("5² = 25, 2^3^2 = 64, -3 + 5 = 2; 3x - 2 = 7, 9^99999999 = 1")]
    [True, False, True]
    >>> [s.holds for s in statements("Steps:\\n- 12 × 4 = 46\\n1) 46 + 2 = 48 (correct)")]
    [False, True]
    """
    return _statements(_tokens(text[:MAX_CHARS]))


def _statements(tokens: Sequence[_Tok]) -> list[Statement]:
    """The calculations among ``tokens``: runs of segments ``e1 = e2 = ...`` between breaks
    (two numbers in a row are a break too), each ``=`` checked."""
    found: list[Statement] = []
    run: list[list[_Tok]] = [[]]
    previous = _BREAK
    for tok in [*tokens, _BREAK]:
        if tok.kind == "=":
            run.append([])
        elif tok.kind == "b" or (tok.kind == "n" and previous.kind == "n"):
            if len(run) > 1:
                found.extend(_run_statements(run, MAX_STATEMENTS - len(found)))
                if len(found) >= MAX_STATEMENTS:
                    return found
            run = [[tok]] if tok.kind == "n" else [[]]
        else:
            run[-1].append(tok)
        previous = tok
    return found


def _run_statements(run: list[list[_Tok]], room: int) -> list[Statement]:
    """The calculations of one run of segments ``e1 = e2 = ...``: each segment that is an
    expression with an operator, followed by a written result. In a chain
    (``5 + 4 = 9 - 2 = 7``) each later calculation starts from the result written before it."""
    found: list[Statement] = []
    run = [_unopened(run[0]), *run[1:-1], _unclosed(run[-1])]
    for k in range(len(run) - 1):
        if len(found) >= room:
            break
        lhs, rhs = run[k], run[k + 1]
        if not lhs or (k == 0 and lhs[0].kind == "o" and not lhs[0].lead):  # after a word ("3x - 2 = 7"), a bare sign
            continue
        written = _written_result(rhs)
        if written is None or len(lhs) > _MAX_TOKENS or sum(1 for t in lhs if t.kind == "n") > MAX_OPERANDS:
            continue
        parser = _Parser(lhs)
        value = parser.parse()
        if not parser.ok or parser.unchecked or parser.binary == 0:
            continue
        num, negative = written
        found.append(Statement(value=value, result=-num.value if negative else num.value, holds=_holds(value, num, negative)))
    return found


def _unopened(segment: list[_Tok]) -> list[_Tok]:
    """A run's first segment without the ``(`` it starts with that no ``)`` in it closes
    (``(3 + 5 = 8)``, ``so (3 × 4 = 12)``); balanced parentheses stay (``(3 + 5) = 8``)."""
    return segment[_unmatched([t.kind for t in segment], "(", ")") :]


def _unclosed(segment: list[_Tok]) -> list[_Tok]:
    """A run's last segment without the ``)`` it ends with that no ``(`` in it opens
    (``= 8)``), and without a ``(`` at its end, which opens a remark (``= 48 (correct)``)."""
    if segment and segment[-1].kind == "(":
        return segment[:-1]
    return segment[: len(segment) - _unmatched([t.kind for t in reversed(segment)], ")", "(")]


def _unmatched(kinds: Sequence[str], opening: str, closing: str) -> int:
    """How many of the ``opening`` brackets ``kinds`` starts with nothing after them closes:
    of the ``k`` it starts with, the first ``d``, ``d`` the lowest depth from the ``k``-th on; one pass.

    >>> _unmatched(["(", "(", "n", ")", "="], "(", ")"), _unmatched(["(", "n", ")"], "(", ")")
    (1, 0)
    """
    k = 0
    while k < len(kinds) and kinds[k] == opening:
        k += 1
    depth = lowest = k
    for kind in kinds[k:]:
        depth += kind == opening
        depth -= kind == closing
        lowest = min(lowest, depth)
    return max(lowest, 0)


def _written_result(segment: Sequence[_Tok]) -> tuple[_Num, bool] | None:
    """The result written right after ``=``: ``[-]NUMBER``, then nothing or an operator other
    than ``^`` (a chain goes on); None otherwise (``= (3``, ``= 8^2``)."""
    negative = bool(segment) and segment[0].kind == "o" and segment[0].op == "-"
    i = 1 if negative else 0
    if i >= len(segment) or segment[i].num is None:
        return None
    if i + 1 < len(segment) and (segment[i + 1].kind != "o" or segment[i + 1].op == "^"):
        return None
    num = segment[i].num
    assert num is not None
    return num, negative


def last_paragraph(prompt: Prompt) -> str:
    """The question a prompt asks, as the grounding check reads it: the last paragraph
    (after the last blank line) of its text or last user message, at most :data:`MAX_CHARS`.

    >>> last_paragraph("Q: 2 + 2?\\nA: 4\\n\\nQ: 3 + 5?")
    'Q: 3 + 5?'
    """
    text = question_text(prompt).strip()
    start = 0
    for m in _BLANK_LINE.finditer(text):
        start = m.end()
    return text[start:][:MAX_CHARS]


def _numbers(tokens: Sequence[_Tok]) -> set[str]:
    """The distinct numbers among ``tokens``, canonical (as written: ``25%`` is 25)."""
    return {t.num.key for t in tokens if t.num is not None}


@functools.lru_cache(maxsize=64)
def _asked(question: str) -> frozenset[str]:
    """The distinct numbers of ``question``: the same for every candidate of a request, so read once."""
    return frozenset(_numbers(_tokens(question[:MAX_CHARS])))


def check_text(text: str, question: str) -> Score:
    """The checks of one candidate's ``text`` against the ``question`` (its last paragraph).

    >>> check_text("12 × 3 = 36. The answer is 36.", "12 boxes of 3 eggs?").model_dump()
    {'value': 1.0, 'details': {'statements': 1, 'false': 0, 'follows': True, 'grounding': 1.0}}
    >>> check_text("I do not know.", "What is love?").value is None
    True
    """
    text = text[:MAX_CHARS]
    tokens = _tokens(text)
    found = _statements(tokens)
    parts: list[float] = []
    false = sum(1 for s in found if not s.holds)
    if found:
        parts.append((len(found) - false) / len(found))
    follows: bool | None = None
    final = last_number(text)
    if found and final is not None:
        follows = Fraction(final) == found[-1].result
        parts.append(float(follows))
    grounding: float | None = None
    asked = _asked(question)
    if asked:
        grounding = len(asked & _numbers(tokens)) / len(asked)
        parts.append(grounding)
    details = {
        "statements": len(found),
        "false": false,
        "follows": follows,
        "grounding": None if grounding is None else round(grounding, 4),
    }
    return Score(value=sum(parts) / len(parts) if parts else None, details=details)


class ArithmeticCheck:
    """Score = mean of the checks that apply: calculations that hold, final answer that
    follows, question numbers used (see the module docstring); None when none applies.

    Each candidate is checked alone, so the work is done in :meth:`prepare` as
    candidates finish and cached until :meth:`release`.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> c = Candidate(index=0, spec=spec, text="17 × 3 = 51")
    >>> anyio.run(ArithmeticCheck().score, Request(prompt="What is 17 * 3?"), [c])[0].value
    1.0
    """

    name = "arithmetic"

    def __init__(self) -> None:
        self._checked: CandidateCache[Score] = CandidateCache()

    def to_config(self) -> ArithmeticConfig:
        """The config that rebuilds this reranker."""
        return ArithmeticConfig()

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Check ``candidate`` ahead of :meth:`score`: on the event loop for a short text
        (a worker thread costs more than the check), in a worker thread past
        :data:`INLINE_CHARS` characters."""
        key = cache_key(request, candidate)
        if key not in self._checked:
            self._checked.put(key, await _check(candidate.text, last_paragraph(request.prompt)))

    def release(self, request: Request) -> None:
        """Drop the checks cached for ``request``."""
        self._checked.forget(request.id)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        question: str | None = None
        scores: list[Score] = []
        for c in candidates:
            got = self._checked.get(cache_key(request, c))
            if got is None:
                if question is None:
                    question = last_paragraph(request.prompt)
                got = await _check(c.text, question)
            scores.append(got)
        return scores


async def _check(text: str, question: str) -> Score:
    """:func:`check_text`, on the event loop for a short text (a worker thread costs more than
    the check), in a worker thread past :data:`INLINE_CHARS` characters."""
    if len(text) <= INLINE_CHARS:
        return check_text(text, question)
    return await anyio.to_thread.run_sync(check_text, text, question)


@RERANKERS.register("arithmetic")
class ArithmeticConfig(RerankerConfig):
    """``arithmetic``: checks of the calculations a candidate writes (:class:`ArithmeticCheck`).

    >>> ArithmeticConfig.from_short("")
    ArithmeticConfig(kind='arithmetic', weight=1.0)
    """

    kind: Literal["arithmetic"] = "arithmetic"
    reranker: ClassVar[Callable[..., Reranker] | None] = ArithmeticCheck
    client_safe: ClassVar[bool] = True
    """Safe for clients: no model, no file, and bounded work for any text."""
