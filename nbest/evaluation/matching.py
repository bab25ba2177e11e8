"""Deciding whether a candidate's answer is right.

Three modes, chosen with ``--match``:

``auto`` (default)
    Exact on an answer the candidate clearly gives, containment otherwise:
    with the ``auto`` extractor, a ``\\boxed{}`` answer, or the last number
    when the gold answer is a number, is compared exactly (as in ``exact``);
    a gold answer in words ("Tokyo") is looked for in the text (as in
    ``contains``), so "The capital city of Japan is Tokyo." is right. With
    another extractor (``--extract choice``, ``regex:...``), its answer is
    compared exactly when it finds one, the text searched otherwise. Numeric
    sets score as with ``exact``.
``exact``
    The answer extracted from the candidate (``--extract``, default ``auto``:
    ``\\boxed{}``, else the last number, else the whole text; see
    :mod:`nbest.rerankers.extract`) and the gold answer, both through
    :func:`~nbest.rerankers.extract.normalize_answer`, are equal: ``"$1,000.00"``
    matches ``1000``, ``" Paris. "`` matches ``"paris"``.
``contains``
    The gold answer appears in the candidate's text as a whole phrase, after
    both are case-folded, accents and punctuation dropped and white space
    collapsed: gold ``"new york"`` is in ``"It is New York."``, gold
    ``"bogota"`` in ``"Bogotá."``, but gold ``"12"`` is not in ``"123"``.

A gold field holding a list accepts any one of its answers.

:func:`matching_warning` says when a mode judged nothing right although the
gold answers appear in the candidates' text (exact matching on sentences).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Literal

from nbest.errors import ConfigError
from nbest.rerankers.extract import Extractor, boxed, get_extractor, last_number, normalize_answer, normalize_number

__all__ = ["MATCH_MODES", "MatchMode", "Matcher", "matching_warning"]

MatchMode = Literal["auto", "exact", "contains"]
MATCH_MODES: tuple[MatchMode, ...] = ("auto", "exact", "contains")
"""The modes, the default first."""

_PUNCT = str.maketrans(string.punctuation + "“”‘’«»…¿¡", " " * (len(string.punctuation) + 9))


def _plain(text: str) -> str:
    """Case-folded, accents and punctuation dropped, white space collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.translate(_PUNCT).split())


def _contains(text: str, gold: Sequence[str]) -> bool:
    plain = _plain(text)
    return any((g := _plain(item)) and re.search(rf"(?<!\w){re.escape(g)}(?!\w)", plain) for item in gold)


class Matcher:
    """``matcher.correct(text, gold)``: is the candidate ``text`` right?

    >>> Matcher("exact", "number").correct("So the total is $1,000.", ["1000"])
    True
    >>> Matcher("contains").correct("It is New York.", ["new york"]), Matcher("contains").correct("123", ["12"])
    (True, False)
    >>> Matcher().correct("The capital city of Japan is Tokyo.", ["Tokyo"]), Matcher("exact").correct("Tokyo.", ["Tokyo"])
    (True, True)

    Raises:
        ConfigError: unknown mode or extractor.
    """

    def __init__(self, mode: MatchMode = "auto", extract: str | Extractor = "auto") -> None:
        if mode not in MATCH_MODES:
            raise ConfigError(f"--match: unknown mode {mode!r}; use {', '.join(MATCH_MODES)}", parameter="match", value=mode)
        self.mode: MatchMode = mode
        self.extract = get_extractor(extract)
        self.extract_name: str = extract if isinstance(extract, str) else getattr(extract, "__name__", "custom")

    def answer(self, text: str) -> str | None:
        """The normalised answer the text gives (exact mode), or None."""
        found = self.extract(text)
        return None if found is None else (normalize_answer(found) or None)

    def correct(self, text: str, gold: Sequence[str]) -> bool:
        if self.mode == "exact":
            return self._equal(self.answer(text), gold)
        if self.mode == "contains":
            return _contains(text, gold)
        if self.extract_name != "auto":  # the extractor's answer when it finds one, else the text
            answer = self.answer(text)
            return self._equal(answer, gold) if answer is not None else _contains(text, gold)
        found = boxed(text)
        if found is not None:  # a boxed answer is the answer
            return self._equal(normalize_answer(found) or None, gold)
        numeric = [g for g in gold if normalize_number(g.strip()) is not None]
        words = [g for g in gold if normalize_number(g.strip()) is None]
        return bool(numeric and self._equal(last_number(text), numeric)) or bool(words and _contains(text, words))

    @staticmethod
    def _equal(answer: str | None, gold: Sequence[str]) -> bool:
        return answer is not None and any(answer == normalize_answer(g) for g in gold)


def matching_warning(
    mode: str, texts: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]]
) -> str | None:
    """A warning when ``mode`` judged no candidate right although some candidates hold
    their gold answer as a phrase (what ``contains`` would accept); None otherwise.

    ``texts[i]``, ``golds[i]``, ``correct[i]``: item i's candidates, gold answers and verdicts.

    >>> warning = matching_warning("exact", [["The capital city of Japan is Tokyo."]], [["Tokyo"]], [[False]])
    >>> print(warning[:111])
    --match exact judged no candidate right, but the gold answer appears in 1 of 1 candidates (1 of 1 prompts, e.g.
    """
    if any(any(row) for row in correct):
        return None
    hits = [[_contains(t, golds[i]) for t in row] for i, row in enumerate(texts)]
    found = sum(sum(row) for row in hits)
    if not found:
        return None
    i = next(i for i, row in enumerate(hits) if any(row))
    text = texts[i][hits[i].index(True)]
    example = text if len(text) <= 60 else text[:57] + "..."
    gold = golds[i][0] if len(golds[i]) == 1 else next(g for g in golds[i] if _contains(text, [g]))
    return (
        f"--match {mode} judged no candidate right, but the gold answer appears in {found} of "
        f"{sum(len(row) for row in texts)} candidates ({sum(any(row) for row in hits)} of {len(texts)} prompts, "
        f"e.g. gold {gold[:40]!r} in {example!r}): the accuracies are not to be trusted; "
        "try --match auto or contains, or an --extract that finds the answer"
    )
