"""Majority vote (self-consistency): the answer most candidates agree on wins.

Each candidate's text goes through an extractor (:mod:`nbest.rerankers.extract`)
and :func:`~nbest.rerankers.extract.normalize_answer`; candidates with the same
normalised answer vote together. A candidate's score is its answer's *vote
share*: the fraction of all candidates (or of their probability mass, with
``weight="prob"``) that give the same answer. Candidates that give no answer
vote for nothing and score 0.

The Ranker groups ``Result.answers`` by the extracted answer, with the vote
share as each answer's confidence (this reranker puts ``answer`` and ``share``
in every Score's details).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, Self

import anyio.to_thread
from pydantic import field_validator

from nbest.errors import ConfigError
from nbest.rerankers.base import CandidateCache, cache_key
from nbest.rerankers.extract import Extractor, get_extractor, normalize_answer
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, Request, Score

__all__ = ["MajorityVote", "VoteConfig", "VoteWeight"]

VoteWeight = Literal["uniform", "prob", "seq_prob"]


class MajorityVote:
    """Score = share of the votes that the candidate's answer got.

    Args:
        extract: extractor name (``"number"``, ``"boxed"``, ``"choice"``,
            ``"regex:PAT"``, ``"json:FIELD"``, ...) or a callable; default
            ``"auto"`` (boxed, else last number, else the whole text).
        normalize: maps an extracted answer to the key votes are counted on.
        weight: ``"uniform"`` (one vote each), ``"prob"`` (each vote weighs
            ``exp(mean_logprob)``, the per-token probability) or ``"seq_prob"``
            (``exp(cumulative_logprob)``, the whole text's probability). With a
            weight, a set in which some candidate lacks log-probabilities falls
            back to uniform votes (``details["weight"]`` says so).
        name: the reranker's name (``"vote"``).

    Raises:
        ConfigError: unknown extractor or weight.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> cs = [Candidate(index=i, spec=spec, text=t) for i, t in enumerate(["It is 51.", "51", "52.0", "x"])]
    >>> [s.value for s in anyio.run(MajorityVote(extract="number").score, Request(prompt="17*3?"), cs)]
    [0.5, 0.5, 0.25, 0.0]
    """

    def __init__(
        self,
        extract: str | Extractor = "auto",
        *,
        normalize: Callable[[str], str] = normalize_answer,
        weight: VoteWeight = "uniform",
        name: str = "vote",
    ) -> None:
        if weight not in ("uniform", "prob", "seq_prob"):
            raise ConfigError(
                f"weight: unknown vote weight {weight!r}; use uniform, prob or seq_prob", parameter="weight", value=weight
            )
        self.extract: Extractor = get_extractor(extract)
        self._extract_name = extract if isinstance(extract, str) else None
        self.normalize = normalize
        self.weight: VoteWeight = weight
        self.name = name
        self._answers: CandidateCache[tuple[str | None]] = CandidateCache()

    def to_config(self) -> VoteConfig:
        """The config that rebuilds this reranker.

        Raises:
            ConfigError: it was built with a callable extractor or normaliser
                (code has no config).
        """
        if self._extract_name is None or self.normalize is not normalize_answer or self.name != "vote":
            raise ConfigError("vote: built with a callable extractor, normaliser or name; it has no config", parameter="extract")
        return VoteConfig(extract=self._extract_name, votes=self.weight)

    def answer(self, text: str) -> str | None:
        """The normalised answer ``text`` gives, or None."""
        found = self.extract(text)
        if found is None:
            return None
        key = self.normalize(found)
        return key or None

    def _weights(self, candidates: Sequence[Candidate]) -> tuple[list[float], str]:
        if self.weight == "uniform":
            return [1.0] * len(candidates), "uniform"
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
        """Extract ``candidate``'s answer ahead of :meth:`score` (in a worker thread)."""
        key = cache_key(request, candidate)
        if key not in self._answers:
            self._answers.put(key, (await anyio.to_thread.run_sync(self.answer, candidate.text),))

    def release(self, request: Request) -> None:
        """Drop the answers extracted for ``request``."""
        self._answers.forget(request.id)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        answers = []
        for c in candidates:
            cached = self._answers.get(cache_key(request, c))
            answers.append(cached[0] if cached is not None else self.answer(c.text))
        weights, how = self._weights(candidates)
        total = math.fsum(weights)
        mass: dict[str, float] = {}
        votes: dict[str, int] = {}
        for answer, w in zip(answers, weights, strict=True):
            if answer is not None:
                mass[answer] = mass.get(answer, 0.0) + w
                votes[answer] = votes.get(answer, 0) + 1
        scores = []
        for answer in answers:
            share = mass[answer] / total if answer is not None and total > 0 else 0.0
            scores.append(
                Score(
                    value=share,
                    details={"answer": answer, "share": share, "votes": votes.get(answer, 0) if answer else 0, "weight": how},
                )
            )
        return scores


@RERANKERS.register("vote")
class VoteConfig(RerankerConfig):
    """``vote[:EXTRACTOR]``: self-consistency majority vote (:class:`MajorityVote`).

    >>> VoteConfig.from_short("number")
    VoteConfig(kind='vote', weight=1.0, extract='number', votes='uniform')
    """

    kind: Literal["vote"] = "vote"
    extract: str = "auto"
    """Answer extractor: auto, number, boxed, choice, last_line, json:FIELD, regex:PATTERN ..."""
    votes: VoteWeight = "uniform"
    """How votes weigh: uniform (one each), prob (per-token probability), seq_prob (whole text's)."""

    short_help: ClassVar[str] = "vote[:EXTRACTOR]"
    client_safe: ClassVar[bool] = True

    @field_validator("extract")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        get_extractor(value)
        return value

    @classmethod
    def from_short(cls, arg: str) -> Self:
        return cls(extract=arg or "auto")

    def safe_for_clients(self) -> bool:
        # a client's regular expression can backtrack for hours on a short text
        return not self.extract.startswith("regex:")

    def build(self, *, engine: Generator | None = None) -> MajorityVote:
        return MajorityVote(extract=self.extract, weight=self.votes)
