"""Deciding whether a candidate's answer is right.

Two modes, chosen with ``--match``:

``exact`` (default)
    The answer extracted from the candidate (``--extract``, default ``auto``:
    ``\\boxed{}``, else the last number, else the whole text; see
    :mod:`nbest.rerankers.extract`) and the gold answer, both through
    :func:`~nbest.rerankers.extract.normalize_answer`, are equal: ``"$1,000.00"``
    matches ``1000``, ``" Paris. "`` matches ``"paris"``.
``contains``
    The gold answer appears in the candidate's text as a whole phrase, after
    both are case-folded, punctuation turned into spaces and white space
    collapsed: gold ``"new york"`` is in ``"It is New York."`` but gold ``"12"``
    is not in ``"123"``.

A gold field holding a list accepts any one of its answers.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from nbest.errors import ConfigError
from nbest.rerankers.extract import Extractor, get_extractor, normalize_answer

__all__ = ["MatchMode", "Matcher"]

MatchMode = Literal["exact", "contains"]

_PUNCT = str.maketrans(string.punctuation + "“”‘’«»…", " " * (len(string.punctuation) + 7))


def _plain(text: str) -> str:
    return " ".join(text.casefold().translate(_PUNCT).split())


class Matcher:
    """``matcher.correct(text, gold)``: is the candidate ``text`` right?

    >>> Matcher("exact", "number").correct("So the total is $1,000.", ["1000"])
    True
    >>> Matcher("contains").correct("It is New York.", ["new york"]), Matcher("contains").correct("123", ["12"])
    (True, False)

    Raises:
        ConfigError: unknown mode or extractor.
    """

    def __init__(self, mode: MatchMode = "exact", extract: str | Extractor = "auto") -> None:
        if mode not in ("exact", "contains"):
            raise ConfigError(f"--match: unknown mode {mode!r}; use exact or contains", parameter="match", value=mode)
        self.mode: MatchMode = mode
        self.extract = get_extractor(extract)
        self.extract_name: str = extract if isinstance(extract, str) else getattr(extract, "__name__", "custom")

    def answer(self, text: str) -> str | None:
        """The normalised answer the text gives (exact mode), or None."""
        found = self.extract(text)
        return None if found is None else (normalize_answer(found) or None)

    def correct(self, text: str, gold: list[str]) -> bool:
        if self.mode == "exact":
            answer = self.answer(text)
            return answer is not None and any(answer == normalize_answer(g) for g in gold)
        plain = _plain(text)
        return any((g := _plain(item)) and re.search(rf"(?<!\w){re.escape(g)}(?!\w)", plain) for item in gold)
