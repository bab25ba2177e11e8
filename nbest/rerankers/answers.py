"""Grouping candidates that give the same answer.

Three ways, tried by the Ranker in this order:

1. a reranker that extracts answers (MajorityVote) put ``answer`` in each
   Score's details: candidates are grouped by it (:func:`group_extracted`),
   and an answer's confidence is its vote share when the reranker gave one;
2. a ``group`` callable given to the Ranker (e.g. near-duplicate grouping by
   embedding similarity, :class:`~nbest.rerankers.embedding.NearDuplicates`);
3. the normalised text (:func:`group_answers`).

Otherwise an answer's confidence is the sum of its candidates' confidences.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence

from nbest.types import Answer, Candidate

__all__ = ["group_answers", "group_extracted", "normalize_text"]

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


def group_extracted(
    candidates: Sequence[Candidate],
    answers: Mapping[int, str | None],
    shares: Mapping[int, float] | None = None,
) -> list[Answer]:
    """Group ranked candidates by an answer already extracted for each (by index).

    An answer's confidence is ``shares`` of its candidates (all equal: the
    answer's vote share) when given, else the sum of their confidences.
    Candidates without an answer, or that failed, are left out.

    >>> from nbest.types import CandidateSpec, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> cs = [Candidate(index=i, spec=spec, confidence=0.25) for i in range(4)]
    >>> [(a.answer, a.confidence, a.support) for a in group_extracted(cs, {0: "51", 1: "52", 2: "51", 3: None})]
    [('51', 0.5, [0, 2]), ('52', 0.25, [1])]
    """
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        key = answers.get(cand.index)
        if cand.ok and key:
            groups.setdefault(key, []).append(cand)
    result = []
    for key, members in groups.items():
        if shares is not None and all(c.index in shares for c in members):
            confidence = max(shares[c.index] for c in members)
        else:
            confidence = sum(c.confidence or 0.0 for c in members)
        result.append(Answer(answer=key, confidence=min(confidence, 1.0), support=[c.index for c in members]))
    result.sort(key=lambda a: (-a.confidence, min(a.support)))
    return result
