"""Clustering free-form answers by meaning, so that meanings vote and not phrasings.

A majority vote counts equal answers. For an extractor that finds a short
answer (a number, a boxed expression, a choice letter) equal keys are equal
answers; for free-form text they are not: "Tokyo." and "The capital city of
Japan is Tokyo." give the same answer in two phrasings and would vote apart.
:class:`~nbest.rerankers.vote.MajorityVote` therefore clusters its free-form
answers before it counts them, by one of two methods:

* ``span`` (no model, the default) — the shared short answer span. Each
  answer's *residual* is the set of its content words that the question does
  not already contain: words are case-folded, accent-stripped, and a final
  ``s`` dropped (``capitals`` = ``capital``), and function words ("the",
  "is", "it" ...) go. The *minimal* residuals are the non-empty ones that
  contain no other non-empty residual. An answer whose residual contains
  exactly one minimal residual joins that one's cluster; an answer whose
  residual contains two different minimal ones (a long answer naming two
  candidates, "Tokyo, not Kyoto") is ambiguous and stays apart, with the
  answers whose residual is the same as its own; an answer with an empty
  residual (it only repeats the question) votes for its own text. For "What
  is the capital of Japan?", "Tokyo." (residual {tokyo}) and "The capital
  city of Japan is Tokyo." ({city, tokyo}) form one cluster, "It is Kyoto."
  ({kyoto}) another. The rule reads sets only, so the clusters do not depend
  on the candidates' order.
* ``embedding`` — near-duplicates: sentence embeddings (the embedded
  all-MiniLM-L6-v2 by default, through
  :class:`~nbest.rerankers.embedding.Embedder`, in a worker thread) grouped
  by average-link agglomerative clustering (scipy), merging while two
  clusters' mean cosine similarity is at least ``similarity``. Average link
  rather than single link: a chain of pairs that are each similar
  ("Tokyo." ~ "The capital is Tokyo." ~ "The capital is Kyoto.") does not
  merge the ends. Embeddings place an entity swap close ("... is Tokyo." /
  "... is Kyoto."), so the threshold must be high; ``span`` does not have
  that weakness.

Each cluster is named by its shortest member's answer (ties: the
alphabetically first), and that name is the answer the vote counts, the
``answer`` of its Scores, and so of ``Result.answers``: the stopping rules,
which count ``Result.answers``, count clusters.

Bounded work: each answer is read up to :data:`MAX_CHARS` characters and
:data:`MAX_WORDS` content words; the span rule compares distinct residuals
pairwise (frozenset inclusion, in C), the embedding method encodes distinct
texts once and clusters in O(N²) memory. 64 candidates of 100,000 characters
each cluster in milliseconds (span).

:func:`semantic_entropy` (Kuhn et al., 2023; Farquhar et al., 2024) is the
entropy of the distribution of the votes' mass over the clusters: with
uniform votes the *discrete* semantic entropy (cluster sizes), with
``seq_prob`` votes the sequence-probability estimate of Kuhn et al. (each
sample's ``exp(cumulative_logprob)``, normalised over the samples). 0 when
every candidate means the same, ``log K`` for K equally supported clusters.

>>> [sorted(c) for c in span_clusters("What is the capital of Japan?",
...     ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto."]).values()]
[[0, 1], [2]]
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from nbest.errors import ConfigError
from nbest.types import Answer, Prompt

if TYPE_CHECKING:
    from nbest.rerankers.embedding import Embedder

__all__ = [
    "CLUSTER_METHODS",
    "DEFAULT_SIMILARITY",
    "MAX_CHARS",
    "MAX_WORDS",
    "ClusterMethod",
    "answer_entropy",
    "cluster_names",
    "embedding_clusters",
    "question_text",
    "residual",
    "semantic_entropy",
    "span_clusters",
]

ClusterMethod = Literal["span", "embedding", "none"]
"""How free-form answers are grouped before they vote: shared answer span, embedding near-duplicates, or not at all."""

CLUSTER_METHODS: tuple[str, ...] = ("span", "embedding", "none")

MAX_CHARS = 2000
"""Characters of each answer that clustering reads (a short answer sits well inside)."""

MAX_WORDS = 64
"""Content words of each answer that the span rule keeps (the first ones)."""

DEFAULT_SIMILARITY = 0.85
"""The embedding method's default cosine-similarity threshold for merging clusters."""

_WORD = re.compile(r"[^\W_]+")

_FUNCTION_WORDS = """
    a an the this that these those there here it its is are was were be been being am do does did done
    have has had having of in on at to from by for with without about into onto over under than then as
    and or but nor so yet if because while although though not no yes also too very just only even still
    i me my mine we us our you your he him his she her they them their what which who whom whose when
    where why how all any both each every some such other another more most much many own same
    can could will would shall should may might must s t d ll m re ve answer answers called known
"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
"""Words that carry no answer: articles, auxiliaries, pronouns, prepositions, conjunctions."""


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> list[str]:
    """The content words of ``text`` (its first :data:`MAX_CHARS` characters), stemmed."""
    folded = unicodedata.normalize("NFKD", text[:MAX_CHARS].casefold())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [_stem(w) for w in _WORD.findall(plain) if w not in FUNCTION_WORDS]


def question_text(prompt: Prompt) -> str:
    """The question a prompt asks: its text, or its last user message's text."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(prompt):
        if message.role == "user" and isinstance(message.content, str):
            return message.content
    return ""


def residual(answer: str, question: str = "") -> frozenset[str]:
    """The content words of ``answer`` that ``question`` does not contain (the span rule's unit).

    >>> sorted(residual("The capital city of Japan is Tokyo.", "What is the capital of Japan?"))
    ['city', 'tokyo']
    """
    asked = set(_words(question))
    kept: list[str] = []
    for w in _words(answer):
        if w not in asked and w not in kept:
            kept.append(w)
            if len(kept) >= MAX_WORDS:
                break
    return frozenset(kept)


def span_clusters(question: str, answers: Sequence[str]) -> dict[str, list[int]]:
    """Cluster ``answers`` by their shared short answer span (see the module docstring).

    Returns the clusters as ``{name: positions in answers}``, named by their
    shortest member (normalised with :func:`~nbest.rerankers.extract.normalize_answer`),
    in the order of their first member.

    >>> span_clusters("Capital of Japan?", ["Tokyo", "Kyoto", "Tokyo, not Kyoto", "tokyo is"])
    {'tokyo': [0, 3], 'kyoto': [1], 'tokyo not kyoto': [2]}
    """
    residuals = [residual(a, question) for a in answers]
    distinct = sorted({r for r in residuals if r}, key=lambda r: (len(r), sorted(r)))
    minimal: list[frozenset[str]] = []
    for r in distinct:  # by size: any proper subset of r is already judged
        if not any(m <= r for m in minimal):
            minimal.append(r)
    keys: list[object] = []
    for i, r in enumerate(residuals):
        if not r:
            keys.append(("text", _plain_key(answers[i])))
            continue
        inside = [m for m in minimal if len(m) <= len(r) and m <= r]
        keys.append(inside[0] if len(inside) == 1 else r)
    return cluster_names(answers, keys)


def _plain_key(text: str) -> str:
    from nbest.rerankers.extract import normalize_answer

    return normalize_answer(text[:MAX_CHARS])


def cluster_names(answers: Sequence[str], keys: Sequence[object]) -> dict[str, list[int]]:
    """Group positions by ``keys``; name each group by its shortest answer (ties: alphabetical),
    normalised; groups in the order of their first member. Groups whose names are equal
    (their shortest answers normalise alike) are one."""
    from nbest.rerankers.extract import normalize_answer

    groups: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    named: dict[str, list[int]] = {}
    for members in groups.values():
        texts = sorted((normalize_answer(answers[i][:MAX_CHARS]) for i in members), key=lambda t: (len(t), t))
        named.setdefault(texts[0], []).extend(members)  # two clusters named alike say the same: one
    return {name: sorted(members) for name, members in named.items()}


def embedding_clusters(vectors: object, similarity: float = DEFAULT_SIMILARITY) -> list[int]:
    """Average-link clusters of unit ``vectors`` (rows) merged while the mean cosine
    similarity between two clusters is at least ``similarity``: a cluster label per row.

    >>> import numpy as np
    >>> embedding_clusters(np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]]), 0.9)
    [0, 0, 1]

    Raises:
        ConfigError: a similarity outside (0, 1].
    """
    import numpy as np

    check_similarity(similarity)
    rows = np.asarray(vectors, dtype=np.float64)
    n = len(rows)
    if n == 0:
        return []
    if n == 1:
        return [0]
    from scipy.cluster.hierarchy import fcluster, linkage  # type: ignore[import-untyped]
    from scipy.spatial.distance import squareform  # type: ignore[import-untyped]

    distance = np.clip(1.0 - rows @ rows.T, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    labels = fcluster(tree, t=1.0 - similarity + 1e-9, criterion="distance")
    first: dict[int, int] = {}
    return [first.setdefault(int(label), len(first)) for label in labels]


def check_similarity(similarity: float) -> float:
    """``similarity`` if it is a number in (0, 1].

    Raises:
        ConfigError: naming the field and what is allowed.
    """
    if isinstance(similarity, bool) or not isinstance(similarity, (int, float)) or not 0 < similarity <= 1:
        raise ConfigError(
            f"similarity: must be a cosine similarity in (0, 1] (got {similarity!r})", parameter="similarity", value=similarity
        )
    return float(similarity)


async def embed_clusters(embedder: Embedder, answers: Sequence[str], similarity: float) -> dict[str, list[int]]:
    """Cluster ``answers`` by embedding near-duplicates (distinct texts encoded once, in a worker thread)."""
    import anyio.to_thread

    texts = [a[:MAX_CHARS].strip() for a in answers]
    distinct = sorted(set(texts))
    if not distinct:
        return {}
    vectors = await embedder.encode(distinct)
    labels = await anyio.to_thread.run_sync(embedding_clusters, vectors, similarity)
    label_of = dict(zip(distinct, labels, strict=True))
    return cluster_names(answers, [label_of[t] for t in texts])


def _entropy(masses: Iterable[float]) -> float:
    values = [m for m in masses if m > 0 and math.isfinite(m)]
    total = math.fsum(values)
    if total <= 0:
        return 0.0
    return max(0.0, -math.fsum(m / total * math.log(m / total) for m in values))


def semantic_entropy(mass: Mapping[str, float]) -> float:
    """Entropy (nats) of the clusters' share of the votes' mass: ``-sum p_k log p_k``
    with ``p_k = mass_k / sum(mass)``; 0 with one cluster (or none).

    >>> round(semantic_entropy({"tokyo": 3.0, "kyoto": 1.0}), 4)
    0.5623
    """
    return _entropy(mass.values())


def answer_entropy(answers: Sequence[Answer]) -> float:
    """The semantic entropy of a Result's answers, from their confidences (a vote's shares;
    with another ranker, the summed candidate confidences).

    >>> from nbest.types import Answer
    >>> round(answer_entropy([Answer(answer="tokyo", confidence=0.5, support=[0, 1]),
    ...                       Answer(answer="kyoto", confidence=0.5, support=[2, 3])]), 4)
    0.6931
    """
    return _entropy(a.confidence for a in answers)
