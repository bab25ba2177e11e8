"""Majority vote (self-consistency): the answer most candidates agree on wins.

Each candidate's text goes through an extractor (:mod:`nbest.rerankers.extract`)
and :func:`~nbest.rerankers.extract.normalize_answer`; candidates with the same
normalised answer vote together. A candidate's score is its answer's *vote
share*: the fraction of all candidates (or of their probability mass, with
``weight="prob"``) that give the same answer. Candidates that give no answer
vote for nothing and score 0.

Confidence-weighted votes read a confidence signal of each candidate
(:mod:`nbest.rerankers.confidence`: ``mean_logprob`` by default, the others
need ``top_logprobs`` > 0 in the sampling settings):

* ``cisc`` — CISC (Taubenfeld et al., 2025): each vote weighs
  ``softmax(signal / temperature)`` over the candidates.
* ``filter`` — DeepConf offline (Fu et al., 2025): keep the ``keep`` fraction
  of candidates with the highest signal (at least one; ties broken by plan
  order), then a plain majority among them; the others vote for nothing.
* ``borda`` — Borda count over the signal's ranks (Kang et al., 2025, with
  self-certainty): the candidate ranked ``r`` of ``N`` (1 = most confident,
  ties share their mean rank) votes ``(N - r + 1) ** power``.

When some candidate lacks the signal the set falls back to uniform votes
(``details["weight"]`` says so), as the ``prob`` weights do. A candidate's
signals are read from ``Candidate.signals`` when the orchestrator computed them
while it generated (the same values), else from its token log-probabilities.

Free-form answers are clustered by meaning before they vote
(:mod:`nbest.rerankers.cluster`): "Tokyo." and "The capital city of Japan is
Tokyo." are one answer. An answer is free-form when the extractor gives text
rather than a short answer: ``auto`` found neither a boxed answer nor a number
and fell back to the whole text, or the extractor is ``text`` or
``first_line``; numbers, boxed answers, choice letters, ``regex:`` and
``json:`` answers vote as extracted. ``cluster="span"`` (the default) joins
answers that share a short answer span, ``"embedding"`` joins near-duplicate
sentence embeddings, ``"none"`` counts whole normalised texts. Each Score's
details carry the cluster's name as ``answer`` and the ``semantic_entropy`` of
the votes' mass over the clusters (:func:`~nbest.rerankers.cluster.semantic_entropy`).

The Ranker groups ``Result.answers`` by the extracted answer, with the vote
share as each answer's confidence (this reranker puts ``answer`` and ``share``
in every Score's details): with weighted votes, the answer's weighted support.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, Self

import anyio.to_thread
from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from nbest.errors import ConfigError
from nbest.rerankers.base import CandidateCache, cache_key, tied_ranks
from nbest.rerankers.cluster import (
    CLUSTER_METHODS,
    DEFAULT_SIMILARITY,
    ClusterMethod,
    check_similarity,
    embed_clusters,
    question_text,
    semantic_entropy,
    span_clusters,
)
from nbest.rerankers.confidence import SIGNALS, Signal, signals
from nbest.rerankers.extract import Extractor, boxed, first_line, get_extractor, last_number, normalize_answer
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, Request, Score

if TYPE_CHECKING:
    from nbest.rerankers.embedding import Embedder

__all__ = ["MajorityVote", "VoteConfig", "VoteWeight"]

VoteWeight = Literal["uniform", "prob", "seq_prob", "cisc", "filter", "borda"]
"""How votes weigh: one each, by probability, or by a confidence signal (cisc, filter, borda)."""

WEIGHTS: tuple[str, ...] = ("uniform", "prob", "seq_prob", "cisc", "filter", "borda")
SIGNAL_WEIGHTS = ("cisc", "filter", "borda")
"""The weightings that read a confidence signal."""

DEFAULT_TEMPERATURE = 1.0
DEFAULT_KEEP = 0.5
DEFAULT_POWER = 1.0

FREE_FORM = ("auto", "text", "first_line")
"""Extractors whose answers can be free-form text (``auto``: when it falls back to the whole text)."""

_Prepared = tuple[str | None, str | None, dict[str, float] | None]
"""A candidate's normalised answer, its free-form text (None: a short answer), its signals."""


class MajorityVote:
    """Score = share of the votes that the candidate's answer got.

    Args:
        extract: extractor name (``"number"``, ``"boxed"``, ``"choice"``,
            ``"regex:PAT"``, ``"json:FIELD"``, ...) or a callable; default
            ``"auto"`` (boxed, else last number, else the whole text).
        normalize: maps an extracted answer to the key votes are counted on.
        weight: ``"uniform"`` (one vote each), ``"prob"`` (each vote weighs
            ``exp(mean_logprob)``, the per-token probability), ``"seq_prob"``
            (``exp(cumulative_logprob)``, the whole text's probability), or a
            confidence weighting ``"cisc"``, ``"filter"``, ``"borda"`` (see the
            module docstring). With a weight, a set in which some candidate
            lacks what it needs falls back to uniform votes
            (``details["weight"]`` says so).
        signal: the confidence signal ``cisc``/``filter``/``borda`` read (a
            name in :data:`~nbest.rerankers.confidence.SIGNALS`; default ``mean_logprob``).
        temperature: ``cisc``'s softmax temperature (> 0; default 1).
        keep: ``filter``'s kept fraction, in (0, 1] (default 0.5).
        power: ``borda``'s exponent on the rank weight, >= 0 (default 1).
        cluster: how free-form answers are grouped before they vote:
            ``"span"`` (default: a shared short answer span), ``"embedding"``
            (near-duplicate embeddings), ``"none"`` (whole normalised texts).
        similarity: ``embedding``'s cosine-similarity threshold in (0, 1]
            (default 0.85).
        embedder: an :class:`~nbest.rerankers.embedding.Embedder` to share
            (``embedding``; default: the embedded all-MiniLM-L6-v2).
        name: the reranker's name (``"vote"``).

    Raises:
        ConfigError: unknown extractor, weight, signal or cluster method; an
            option out of range or given to a weighting or clustering that
            does not use it; sentence-transformers missing for ``embedding``.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> cs = [Candidate(index=i, spec=spec, text=t) for i, t in enumerate(["It is 51.", "51", "52.0", "x"])]
    >>> [s.value for s in anyio.run(MajorityVote(extract="number").score, Request(prompt="17*3?"), cs)]
    [0.5, 0.5, 0.25, 0.0]
    >>> texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto."]
    >>> cs = [Candidate(index=i, spec=spec, text=t) for i, t in enumerate(texts)]
    >>> [s.details["answer"] for s in anyio.run(MajorityVote().score, Request(prompt="What is the capital of Japan?"), cs)]
    ['tokyo', 'tokyo', 'it is kyoto']
    """

    def __init__(
        self,
        extract: str | Extractor = "auto",
        *,
        normalize: Callable[[str], str] = normalize_answer,
        weight: VoteWeight = "uniform",
        signal: Signal | None = None,
        temperature: float | None = None,
        keep: float | None = None,
        power: float | None = None,
        cluster: ClusterMethod = "span",
        similarity: float | None = None,
        embedder: Embedder | None = None,
        name: str = "vote",
    ) -> None:
        if weight not in WEIGHTS:
            raise ConfigError(
                f"weight: unknown vote weight {weight!r}; use {', '.join(WEIGHTS)}", parameter="weight", value=weight
            )
        _check_options(weight, signal, temperature, keep, power)
        _check_cluster(cluster, similarity)
        if embedder is not None and cluster != "embedding":
            raise ConfigError(f"embedder: only read by cluster=embedding (cluster is {cluster!r})", parameter="embedder")
        self.extract: Extractor = get_extractor(extract)
        self._extract_name = extract if isinstance(extract, str) else None
        self.normalize = normalize
        self.weight: VoteWeight = weight
        self.signal: Signal | None = signal
        self.temperature = temperature
        self.keep = keep
        self.power = power
        self.cluster: ClusterMethod = cluster
        self.similarity = similarity
        self._shared_embedder = embedder is not None
        self.embedder: Embedder | None = embedder
        if cluster == "embedding" and embedder is None:
            from nbest.rerankers.embedding import Embedder

            self.embedder = Embedder()  # checks the package now; the model loads on first use
        self.name = name
        self._answers: CandidateCache[_Prepared] = CandidateCache()

    def to_config(self) -> VoteConfig:
        """The config that rebuilds this reranker.

        Raises:
            ConfigError: it was built with a callable extractor or normaliser
                (code has no config).
        """
        if self._extract_name is None or self.normalize is not normalize_answer or self.name != "vote" or self._shared_embedder:
            raise ConfigError(
                "vote: built with a callable extractor, normaliser, embedder or name; it has no config", parameter="extract"
            )
        return VoteConfig(
            extract=self._extract_name,
            votes=self.weight,
            signal=self.signal,
            temperature=self.temperature,
            keep=self.keep,
            power=self.power,
            cluster=self.cluster,
            similarity=self.similarity,
        )

    def answer(self, text: str) -> str | None:
        """The normalised answer ``text`` gives, or None."""
        found = self.extract(text)
        if found is None:
            return None
        key = self.normalize(found)
        return key or None

    def free_form(self, text: str) -> str | None:
        """The text ``text``'s answer is clustered on, or None when its answer is a short
        extracted one (a number, a boxed answer ...) or clustering is off."""
        if self.cluster == "none" or self._extract_name not in FREE_FORM:
            return None
        if self._extract_name == "auto":
            return None if boxed(text) or last_number(text) else (text.strip() or None)
        if self._extract_name == "first_line":
            return first_line(text)
        return text.strip() or None

    def _prepared(self, candidate: Candidate) -> _Prepared:
        found: dict[str, float] | None = None
        if self.weight in SIGNAL_WEIGHTS:
            found = candidate.signals if candidate.signals is not None else signals(candidate)
        return self.answer(candidate.text), self.free_form(candidate.text), found

    def _signal_weights(self, values: Sequence[dict[str, float] | None]) -> tuple[list[float], str]:
        name = self.signal or "mean_logprob"
        found = [v.get(name) if v is not None else None for v in values]
        present = [x for x in found if x is not None]
        if len(present) < len(found) or not present:
            return [1.0] * len(values), f"uniform (missing {name})"
        label = f"{self.weight}:{name}"
        if self.weight == "cisc":
            t = self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE
            top = max(present)
            raw = [math.exp((x - top) / t) for x in present]
            total = math.fsum(raw)
            return [w / total for w in raw], label
        order = sorted(range(len(present)), key=lambda i: (-present[i], i))
        if self.weight == "filter":
            keep = self.keep if self.keep is not None else DEFAULT_KEEP
            kept = set(order[: max(1, math.ceil(keep * len(present) - 1e-9))])
            return [1.0 if i in kept else 0.0 for i in range(len(present))], label
        # borda: mean rank of each value (ties share it), rank 1 the most confident
        ranks = tied_ranks([-v for v in present])
        power = self.power if self.power is not None else DEFAULT_POWER
        n = len(present)
        return [(n - r + 1) ** power for r in ranks], label

    def _weights(self, candidates: Sequence[Candidate], values: Sequence[dict[str, float] | None]) -> tuple[list[float], str]:
        if self.weight == "uniform":
            return [1.0] * len(candidates), "uniform"
        if self.weight in SIGNAL_WEIGHTS:
            return self._signal_weights(values)
        logps: list[float | None] = []
        for c in candidates:
            if self.weight == "prob":
                lp = c.mean_logprob
                if lp is None and c.cumulative_logprob is not None and c.num_tokens > 0:
                    lp = c.cumulative_logprob / c.num_tokens
            else:
                lp = c.cumulative_logprob
            logps.append(lp)
        present = [lp for lp in logps if lp is not None]
        if len(present) < len(logps) or not present:
            return [1.0] * len(candidates), "uniform (missing logprobs)"
        top = max(present)  # scale by the largest so tiny sequence probabilities do not underflow
        return [math.exp(lp - top) for lp in present], self.weight

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Extract ``candidate``'s answer (and its confidence signals, when the votes
        read them) ahead of :meth:`score`, in a worker thread."""
        key = cache_key(request, candidate)
        if key not in self._answers:
            self._answers.put(key, await anyio.to_thread.run_sync(self._prepared, candidate))

    def release(self, request: Request) -> None:
        """Drop the answers extracted for ``request``."""
        self._answers.forget(request.id)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        cached = [self._answers.get(cache_key(request, c)) for c in candidates]
        missing = [c for c, got in zip(candidates, cached, strict=True) if got is None]
        if missing and self.weight in SIGNAL_WEIGHTS:  # signals cost O(tokens * k): off the event loop
            done = iter(await anyio.to_thread.run_sync(lambda: [self._prepared(c) for c in missing]))
        else:
            done = iter([self._prepared(c) for c in missing])
        prepared = [got if got is not None else next(done) for got in cached]
        answers = await self._clustered(request, prepared)
        weights, how = self._weights(candidates, [p[2] for p in prepared])
        total = math.fsum(weights)
        mass: dict[str, float] = {}
        votes: dict[str, int] = {}
        for answer, w in zip(answers, weights, strict=True):
            if answer is not None:
                mass[answer] = mass.get(answer, 0.0) + w
                votes[answer] = votes.get(answer, 0) + 1
        entropy = semantic_entropy(mass)
        scores = []
        for answer, w in zip(answers, weights, strict=True):
            share = mass[answer] / total if answer is not None and total > 0 else 0.0
            details = {
                "answer": answer,
                "share": share,
                "votes": votes.get(answer, 0) if answer else 0,
                "weight": how,
                "semantic_entropy": entropy,
            }
            if self.weight in SIGNAL_WEIGHTS:
                details["vote_weight"] = w / total if total > 0 else 0.0
            scores.append(Score(value=share, details=details))
        return scores

    async def _clustered(self, request: Request, prepared: Sequence[_Prepared]) -> list[str | None]:
        """Each candidate's answer, its free-form ones replaced by their cluster's name."""
        answers = [p[0] for p in prepared]
        free = [i for i, p in enumerate(prepared) if p[0] is not None and p[1] is not None]
        if len(free) < 2:
            return answers
        texts = [prepared[i][1] or "" for i in free]
        if self.cluster == "embedding" and self.embedder is not None:
            similarity = self.similarity if self.similarity is not None else DEFAULT_SIMILARITY
            clusters = await embed_clusters(self.embedder, texts, similarity)
        else:
            question = question_text(request.prompt)
            clusters = await anyio.to_thread.run_sync(span_clusters, question, texts)
        for name, members in clusters.items():
            for m in members:
                answers[free[m]] = name
        return answers


def _check_cluster(cluster: str, similarity: float | None) -> None:
    """A known cluster method, and ``similarity`` only with ``embedding``, in range.

    Raises:
        ConfigError: naming the field and what is allowed.
    """
    if cluster not in CLUSTER_METHODS:
        raise ConfigError(
            f"cluster: unknown cluster method {cluster!r}; use {', '.join(CLUSTER_METHODS)}", parameter="cluster", value=cluster
        )
    if similarity is not None:
        if cluster != "embedding":
            raise ConfigError(
                f"similarity: only read by cluster=embedding (cluster is {cluster!r})", parameter="similarity", value=similarity
            )
        check_similarity(similarity)
    if cluster == "embedding":
        import importlib.util

        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "cluster: embedding needs the package sentence-transformers (pip install sentence-transformers)",
                parameter="cluster",
                value=cluster,
            )


def _similarity(text: str) -> float:
    """The number after ``embedding@`` in a short form.

    Raises:
        ConfigError: not a finite number (the range is the config's to check).
    """
    try:
        value = float(text) if len(text) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"similarity: must be a cosine similarity in (0, 1], e.g. embedding@0.9 (got {text[:32]!r})",
            parameter="similarity",
            value=text[:32],
        )
    return value


def _check_options(weight: str, signal: str | None, temperature: float | None, keep: float | None, power: float | None) -> None:
    """Each weighting option in range and given only to the weighting that reads it.

    Raises:
        ConfigError: naming the option and what is allowed.
    """
    if signal is not None:
        if weight not in SIGNAL_WEIGHTS:
            raise ConfigError(
                f"signal: only read by the votes cisc, filter and borda (votes is {weight!r})", parameter="signal", value=signal
            )
        if signal not in SIGNALS:
            raise ConfigError(f"signal: unknown signal {signal!r}; use {', '.join(SIGNALS)}", parameter="signal", value=signal)
    checks: tuple[tuple[str, float | None, str, str, Callable[[float], bool]], ...] = (
        ("temperature", temperature, "cisc", "a number > 0", lambda x: x > 0),
        ("keep", keep, "filter", "a fraction in (0, 1]", lambda x: 0 < x <= 1),
        ("power", power, "borda", "a number in [0, 16]", lambda x: 0 <= x <= 16),
    )
    for field, value, owner, allowed, ok in checks:
        if value is None:
            continue
        if weight != owner:
            raise ConfigError(f"{field}: only read by votes={owner} (votes is {weight!r})", parameter=field, value=value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{field}: must be {allowed} (got {value!r})", parameter=field, value=value)


_OPTIONS = ("signal", "temperature", "keep", "power", "similarity")
"""VoteConfig's weighting and clustering options: left out of its dump when unset, so a plain vote's config reads as before."""


@RERANKERS.register("vote")
class VoteConfig(RerankerConfig):
    """``vote[:WEIGHTING[@SIGNAL]][:CLUSTER[@SIMILARITY]][:EXTRACTOR]``: self-consistency majority vote (:class:`MajorityVote`).

    The argument is an extractor (``vote:number``), optionally after a vote
    weighting (``vote:cisc:number``, ``vote:filter@tail:boxed``,
    ``vote:borda@self_certainty``) and a clustering of free-form answers
    (``vote:embedding``, ``vote:cisc:embedding@0.9:text``, ``vote:none``):
    the words uniform, prob, seq_prob, cisc, filter and borda name a
    weighting, and span, embedding and none a clustering, never an extractor.
    ``temperature``, ``keep`` and ``power`` are set in the config
    (``{"kind": "vote", "votes": "cisc", "temperature": 0.5}``). The default
    clustering, ``span``, is left out of the dump, so a plain vote's config
    reads as it always did.

    >>> VoteConfig.from_short("number")
    VoteConfig(kind='vote', weight=1.0, extract='number', votes='uniform')
    >>> VoteConfig.from_short("filter@tail:number").model_dump()
    {'kind': 'vote', 'weight': 1.0, 'extract': 'number', 'votes': 'filter', 'signal': 'tail'}
    >>> VoteConfig.from_short("cisc:embedding@0.9").model_dump()
    {'kind': 'vote', 'weight': 1.0, 'extract': 'auto', 'votes': 'cisc', 'cluster': 'embedding', 'similarity': 0.9}
    """

    kind: Literal["vote"] = "vote"
    extract: str = "auto"
    """Answer extractor: auto, number, boxed, choice, last_line, json:FIELD, regex:PATTERN ..."""
    votes: VoteWeight = "uniform"
    """How votes weigh: uniform (one each), prob (per-token probability), seq_prob (whole text's),
    or by a confidence signal: cisc (softmax(signal / temperature)), filter (a plain vote among
    the most confident `keep` fraction), borda (Borda count over the signal's ranks)."""
    signal: Signal | None = None
    """The confidence signal cisc, filter and borda read (default mean_logprob): mean_confidence,
    lowest_group, tail, bottom10 and self_certainty need top_logprobs > 0."""
    temperature: float | None = Field(default=None, gt=0.0)
    """cisc: the softmax temperature (default 1)."""
    keep: float | None = Field(default=None, gt=0.0, le=1.0)
    """filter: the fraction of candidates kept, the most confident first (default 0.5)."""
    power: float | None = Field(default=None, ge=0.0, le=16.0)
    """borda: the exponent on the rank weight N - rank + 1 (default 1)."""
    cluster: ClusterMethod = "span"
    """How free-form answers (auto's whole-text fallback, text, first_line) are grouped before they
    vote: span (a shared short answer span, no model), embedding (near-duplicate sentence
    embeddings, all-MiniLM-L6-v2), none (whole normalised texts)."""
    similarity: float | None = Field(default=None, gt=0.0, le=1.0)
    """embedding: the cosine similarity at which clusters merge (default 0.85)."""

    short_help: ClassVar[str] = "vote[:WEIGHTING[@SIGNAL]][:CLUSTER[@SIMILARITY]][:EXTRACTOR]"
    client_safe: ClassVar[bool] = True

    @field_validator("extract")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        get_extractor(value)
        return value

    @model_validator(mode="after")
    def _options_fit(self) -> Self:
        _check_options(self.votes, self.signal, self.temperature, self.keep, self.power)
        _check_cluster(self.cluster, self.similarity)
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        for key in _OPTIONS:
            if data.get(key) is None:
                data.pop(key, None)
        if data.get("cluster") == "span":
            data.pop("cluster")
        return data

    def __repr_args__(self) -> list[tuple[str | None, object]]:
        return [
            (k, v)
            for k, v in super().__repr_args__()
            if not (k in _OPTIONS and v is None) and not (k == "cluster" and v == "span")
        ]

    @classmethod
    def from_short(cls, arg: str) -> Self:
        fields: dict[str, object] = {}
        head, _, rest = arg.partition(":")
        weighting, at, signal = head.partition("@")
        if weighting.strip().lower() in WEIGHTS:
            fields.update(votes=weighting.strip().lower(), signal=signal.strip() if at else None)
            arg = rest
            head, _, rest = arg.partition(":")
        method, at, similarity = head.partition("@")
        if method.strip().lower() in CLUSTER_METHODS:
            fields["cluster"] = method.strip().lower()
            if at:
                fields["similarity"] = _similarity(similarity)
            arg = rest
        fields["extract"] = arg or "auto"
        return cls.parse(fields)

    def safe_for_clients(self) -> bool:
        # a client's regular expression can backtrack for hours on a short text
        return not self.extract.startswith("regex:")

    def build(self, *, engine: Generator | None = None) -> MajorityVote:
        return MajorityVote(
            extract=self.extract,
            weight=self.votes,
            signal=self.signal,
            temperature=self.temperature,
            keep=self.keep,
            power=self.power,
            cluster=self.cluster,
            similarity=self.similarity,
        )
