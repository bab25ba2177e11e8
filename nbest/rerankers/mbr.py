"""Minimum Bayes risk (MBR) decoding: pick the candidate the others agree with most.

Each candidate ``h`` is scored by its expected utility against the other
candidates, used as pseudo-references: ``score(h_i) = mean_{j != i} u(h_i, h_j)``.

Utilities:

* ``"chrf"`` — sentence chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100;
* ``"bleu"`` — sentence BLEU (sacrebleu: 13a tokens, exponential smoothing,
  effective order), 0-100;
* ``"embedding"`` — cosine similarity of sentence embeddings (see
  :mod:`nbest.rerankers.embedding`).

Methods:

* ``"exact"`` — all N·(N-1) utility calls (n-grams are extracted once per
  candidate, then matched pairwise);
* ``"aggregate"`` — reference aggregation (DeNero et al., 2009; Vamvas &
  Sennrich, 2024): the other candidates' n-gram counts (and lengths) are
  averaged into one fractional pseudo-reference, then each candidate needs one
  utility call, linear in N. It equals ``exact`` when there are two candidates
  or all the others are identical, and for the embedding utility always (the
  cosine is linear in the references), otherwise it is a close approximation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import anyio.to_thread

from nbest.errors import ConfigError
from nbest.rerankers.embedding import Embedder, mean_similarity_to_others
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, Request, Score

__all__ = ["MBR", "MBRConfig", "Method", "Utility", "bleu_matrix", "chrf_matrix", "mbr_scores"]

Utility = Literal["chrf", "bleu", "embedding"]
Method = Literal["exact", "aggregate"]

Grams = dict[Any, float]


def _chrf_features(texts: Sequence[str]) -> tuple[Any, list[list[Counter[str]]]]:
    from sacrebleu.metrics.chrf import CHRF
    from sacrebleu.metrics.helpers import extract_all_char_ngrams

    chrf = CHRF()
    return chrf, [extract_all_char_ngrams(chrf._preprocess_segment(t), chrf.char_order, chrf.whitespace) for t in texts]


def _chrf(chrf: Any, hyp: Sequence[Counter[str]] | Sequence[Grams], ref: Sequence[Counter[str]] | Sequence[Grams]) -> float:
    stats: list[float] = []
    for h, r in zip(hyp, ref, strict=True):
        stats.extend(chrf._get_match_statistics(h, r))
    return float(chrf._compute_f_score(stats))


def chrf_matrix(texts: Sequence[str]) -> list[list[float]]:
    """``m[i][j]`` = sentence chrF of ``texts[i]`` against reference ``texts[j]``.

    Equal to ``sacrebleu.sentence_chrf(texts[i], [texts[j]]).score``.
    """
    chrf, feats = _chrf_features(texts)
    return [[_chrf(chrf, feats[i], feats[j]) for j in range(len(texts))] for i in range(len(texts))]


def _bleu_features(texts: Sequence[str]) -> tuple[Any, list[tuple[Counter[tuple[str, ...]], int]]]:
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    bleu = BLEU(effective_order=True)
    return bleu, [extract_all_word_ngrams(bleu._preprocess_segment(t), 1, bleu.max_ngram_order) for t in texts]


class _OthersMean(Mapping[Any, float]):
    """The mean n-gram counts of the *other* candidates, ``(total - own) / (n - 1)``,
    looked up lazily: building it costs nothing, each lookup O(1)."""

    def __init__(self, total: Counter[Any], own: Counter[Any], n: int) -> None:
        self.total, self.own, self.n = total, own, n

    def __getitem__(self, gram: Any) -> float:
        others = self.total[gram] - self.own[gram]
        if others <= 0:
            raise KeyError(gram)
        return others / (self.n - 1)

    def __contains__(self, gram: object) -> bool:
        return self.total[gram] - self.own[gram] > 0

    def __iter__(self) -> Iterator[Any]:
        return (g for g in self.total if g in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _bleu(
    bleu: Any, hyp: tuple[Counter[tuple[str, ...]], int], ref_grams: Counter[Any] | Grams | _OthersMean, ref_len: float
) -> float:
    grams, hyp_len = hyp
    order = bleu.max_ngram_order
    correct = [0.0] * order
    total = [0.0] * order
    for gram, count in grams.items():
        n = len(gram) - 1
        total[n] += count
        if gram in ref_grams:
            correct[n] += min(count, ref_grams[gram])
    return _bleu_from_stats(correct, total, hyp_len, ref_len)


def _bleu_from_stats(correct: list[float], total: list[float], sys_len: int, ref_len: float) -> float:
    """sacrebleu's ``BLEU.compute_bleu`` with exponential smoothing and effective
    order (its sentence-BLEU defaults), for fractional reference counts."""
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    precisions = [0.0] * len(correct)
    smooth = 1.0
    eff_order = len(correct)
    for n in range(1, len(correct) + 1):
        if total[n - 1] == 0:
            break
        eff_order = n
        if correct[n - 1] == 0:
            smooth *= 2
            precisions[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    return bp * math.exp(sum(math.log(p) if p > 0 else -9999999999.0 for p in precisions[:eff_order]) / eff_order)


def bleu_matrix(texts: Sequence[str]) -> list[list[float]]:
    """``m[i][j]`` = sentence BLEU of ``texts[i]`` against reference ``texts[j]``.

    Equal to ``sacrebleu.sentence_bleu(texts[i], [texts[j]]).score``.
    """
    bleu, feats = _bleu_features(texts)
    return [[_bleu(bleu, feats[i], feats[j][0], feats[j][1]) for j in range(len(texts))] for i in range(len(texts))]


def _exact(matrix: list[list[float]]) -> list[float | None]:
    n = len(matrix)
    if n < 2:
        return [None] * n
    return [sum(matrix[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]


def _chrf_aggregate(texts: Sequence[str]) -> list[float | None]:
    """chrF of each text against the mean n-gram counts of the others: the same
    statistics as ``CHRF._get_match_statistics`` with that fractional reference,
    in O(own n-grams) per text (the reference is never built)."""
    n = len(texts)
    if n < 2:
        return [None] * n
    chrf, feats = _chrf_features(texts)
    orders = len(feats[0])
    totals: list[Counter[str]] = [Counter() for _ in range(orders)]
    for f in feats:
        for k in range(orders):
            totals[k].update(f[k])
    sizes = [sum(t.values()) for t in totals]
    scores: list[float | None] = []
    for f in feats:
        stats: list[float] = []
        for k in range(orders):
            own, total = f[k], totals[k]
            own_size = sum(own.values())
            ref_size = (sizes[k] - own_size) / (n - 1)
            match = 0.0
            for gram, count in own.items():
                others = total[gram] - count
                if others > 0:
                    match += min(count, others / (n - 1))
            stats.extend([own_size if ref_size > 0 else 0, ref_size, match])
        scores.append(float(chrf._compute_f_score(stats)))
    return scores


def _bleu_aggregate(texts: Sequence[str]) -> list[float | None]:
    n = len(texts)
    if n < 2:
        return [None] * n
    bleu, feats = _bleu_features(texts)
    total: Counter[Any] = Counter()
    for grams, _ in feats:
        total.update(grams)
    total_len = sum(length for _, length in feats)
    return [_bleu(bleu, (g, length), _OthersMean(total, g, n), (total_len - length) / (n - 1)) for g, length in feats]


def mbr_scores(texts: Sequence[str], utility: Literal["chrf", "bleu"] = "chrf", method: Method = "exact") -> list[float | None]:
    """Expected utility of each text against the others (blocking; None for a lone text).

    >>> [round(s, 2) for s in mbr_scores(["the cat sat", "the cat sat", "a dog ran"])]
    [52.25, 52.25, 3.88]
    """
    if method == "exact":
        return _exact(chrf_matrix(texts) if utility == "chrf" else bleu_matrix(texts))
    return _chrf_aggregate(texts) if utility == "chrf" else _bleu_aggregate(texts)


class MBR:
    """Minimum Bayes risk reranking: score = mean utility against the other candidates.

    Args:
        utility: ``"chrf"`` (default), ``"bleu"`` or ``"embedding"``.
        method: ``"exact"`` (O(N²) utility calls) or ``"aggregate"`` (reference
            aggregation, O(N)).
        model: the embedding model for ``utility="embedding"`` (a name, folder or
            :class:`~nbest.rerankers.embedding.Embedder`; None: the embedded default).
        name: the reranker's name (``"mbr_chrf"``, ``"mbr_bleu"``, ``"mbr_embedding"``).

    Raises:
        ConfigError: unknown utility or method, a model with a string utility,
            an embedding model that is not valid.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> cs = [Candidate(index=i, spec=spec, text=t) for i, t in enumerate(["the cat sat", "the cat sat", "a dog ran"])]
    >>> [round(s.value, 2) for s in anyio.run(MBR().score, Request(prompt="?"), cs)]
    [52.25, 52.25, 3.88]
    """

    def __init__(
        self,
        utility: Utility = "chrf",
        *,
        method: Method = "exact",
        model: str | Embedder | None = None,
        name: str | None = None,
    ) -> None:
        self._model_given = model if isinstance(model, str) else None
        self._shared_embedder = isinstance(model, Embedder)
        if utility not in ("chrf", "bleu", "embedding"):
            raise ConfigError(
                f"utility: unknown MBR utility {utility!r}; use chrf, bleu or embedding", parameter="utility", value=utility
            )
        if method not in ("exact", "aggregate"):
            raise ConfigError(f"method: unknown MBR method {method!r}; use exact or aggregate", parameter="method", value=method)
        if model is not None and utility != "embedding":
            raise ConfigError(
                f"model: only the embedding utility takes a model (utility={utility!r})", parameter="model", value=model
            )
        self.utility: Utility = utility
        self.method: Method = method
        self.embedder: Embedder | None = None
        if utility == "embedding":
            self.embedder = model if isinstance(model, Embedder) else Embedder(model)
        else:
            from importlib.util import find_spec

            if find_spec("sacrebleu") is None:
                raise ConfigError(
                    f"utility: MBR with {utility} needs the package sacrebleu (pip install sacrebleu)",
                    parameter="utility",
                    value=utility,
                )
        self.name = name or f"mbr_{utility}"

    def to_config(self) -> MBRConfig:
        """The config that rebuilds this reranker.

        Raises:
            ConfigError: it was given an Embedder object or a custom name (code has no config).
        """
        if self._shared_embedder or self.name != f"mbr_{self.utility}":
            raise ConfigError("mbr: built with an Embedder object or a custom name; it has no config", parameter="model")
        return MBRConfig(utility=self.utility, method=self.method, model=self._model_given)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        texts = [c.text for c in candidates]
        if not texts:
            return []
        if self.embedder is not None:
            # the cosine is linear in the references: exact and aggregate are the same number
            values = mean_similarity_to_others(await self.embedder.encode(texts))
        else:
            utility: Literal["chrf", "bleu"] = "chrf" if self.utility == "chrf" else "bleu"
            values = await anyio.to_thread.run_sync(mbr_scores, texts, utility, self.method)
        return [Score(value=None if v is None else round(v, 9)) for v in values]


@RERANKERS.register("mbr")
class MBRConfig(RerankerConfig):
    """``mbr[:UTILITY[:METHOD]]``: minimum Bayes risk (:class:`MBR`), e.g. ``mbr:bleu:aggregate``.

    >>> MBRConfig.from_short("bleu:aggregate").reranker_name()
    'mbr_bleu'
    """

    kind: Literal["mbr"] = "mbr"
    utility: Utility = "chrf"
    """chrf, bleu or embedding."""
    method: Method = "exact"
    """exact (N² utility calls) or aggregate (reference aggregation, N)."""
    model: str | None = None
    """Embedding model for utility=embedding (None: the embedded all-MiniLM-L6-v2)."""

    short_help: ClassVar[str] = "mbr[:UTILITY[:METHOD]]"
    client_safe: ClassVar[bool] = True

    @classmethod
    def from_short(cls, arg: str) -> Self:
        utility, _, method = arg.partition(":")
        return cls.parse({"utility": utility or "chrf", "method": method or "exact"})

    def safe_for_clients(self) -> bool:
        return self.model is None  # a named model is a file or a download on the server

    def reranker_name(self) -> str:
        return f"mbr_{self.utility}"

    def build(self, *, engine: Generator | None = None) -> MBR:
        return MBR(self.utility, method=self.method, model=self.model)
