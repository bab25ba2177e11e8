"""Grouping candidates that give the same answer."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from nbest.types import Answer, Candidate

__all__ = ["group_answers", "normalize_text"]

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = string.punctuation + "“”‘’«»…"


def normalize_text(text: str) -> str:
    """Case-fold, collapse white space and trim punctuation at both ends.

    >>> normalize_text("  The capital is  Paris. ")
    'the capital is paris'
    """
    return _SPACE.sub(" ", text).strip().strip(_EDGE_PUNCT).strip().casefold()


def group_answers(candidates: Sequence[Candidate], key: Callable[[str], str | None] = normalize_text) -> list[Answer]:
    """Group ranked candidates by ``key(text)``; most confident answer first.

    Each answer's confidence is the sum of its candidates' confidences; its
    text is the best-ranked supporting candidate's key. Failed candidates and
    those whose key is None or empty are left out.
    """
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        if not cand.ok:
            continue
        k = key(cand.text)
        if k:
            groups.setdefault(k, []).append(cand)
    answers = [
        Answer(
            answer=k,
            confidence=sum(c.confidence or 0.0 for c in members),
            support=[c.index for c in members],
        )
        for k, members in groups.items()
    ]
    answers.sort(key=lambda a: (-a.confidence, min(a.support)))
    return answers
