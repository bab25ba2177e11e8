"""Rerankers that read the engine's log-probabilities.

Three views of the same numbers, from the candidate's sampled tokens
``t_1 .. t_T`` with log-probabilities ``l_1 .. l_T``:

* :class:`SumLogProb` — ``sum(l)``, the log-probability of the whole text.
  Not length-normalised: every extra token lowers it, so it favours short
  candidates. Use it when the answers have about the same length.
* :class:`MeanLogProb` — ``sum(l) / T``, the per-token average. Length-normalised:
  a long and a short candidate that are equally fluent score the same.
* :class:`Perplexity` — ``exp(-sum(l) / T)``, the usual per-token perplexity,
  scored as its negative (``-exp(-mean)``) so that higher is still better.
  Also length-normalised; it ranks exactly like MeanLogProb, but the combined
  score spreads differently under ``zscore`` or ``minmax`` normalisation.

Candidates without log-probabilities (or without tokens) score None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

from nbest.rerankers.base import Reranker
from nbest.rerankers.registry import RERANKERS, RerankerConfig
from nbest.types import Candidate, Request, Score

__all__ = ["MeanLogProb", "MeanLogProbConfig", "Perplexity", "PerplexityConfig", "SumLogProb", "SumLogProbConfig"]


def _sum_logprob(c: Candidate) -> float | None:
    if c.cumulative_logprob is not None:
        return c.cumulative_logprob
    if c.token_logprobs is not None:
        return math.fsum(c.token_logprobs)
    if c.mean_logprob is not None and c.num_tokens > 0:
        return c.mean_logprob * c.num_tokens
    return None


def _mean_logprob(c: Candidate) -> float | None:
    if c.mean_logprob is not None:
        return c.mean_logprob
    total = _sum_logprob(c)
    if total is None or c.num_tokens <= 0:
        return None
    return total / c.num_tokens


class MeanLogProb:
    """Length-normalised log-probability: ``cumulative_logprob / num_tokens``.

    The mean (not the sum) keeps long answers from losing to short ones just
    for being long. Candidates without log-probabilities score None.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> c = Candidate(index=0, spec=spec, text="Paris", num_tokens=2, mean_logprob=-0.25)
    >>> anyio.run(MeanLogProb().score, Request(prompt="?"), [c])[0].value
    -0.25
    """

    name = "mean_logprob"

    def to_config(self) -> MeanLogProbConfig:
        """The config that rebuilds this reranker."""
        return MeanLogProbConfig()

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        return [Score(value=_mean_logprob(c)) for c in candidates]


class SumLogProb:
    """Log-probability of the whole text: ``cumulative_logprob`` (not length-normalised).

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> c = Candidate(index=0, spec=spec, text="Paris", num_tokens=2, cumulative_logprob=-0.5)
    >>> anyio.run(SumLogProb().score, Request(prompt="?"), [c])[0].value
    -0.5
    """

    name = "sum_logprob"

    def to_config(self) -> SumLogProbConfig:
        """The config that rebuilds this reranker."""
        return SumLogProbConfig()

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        return [Score(value=_sum_logprob(c)) for c in candidates]


class Perplexity:
    """Per-token perplexity ``exp(-mean_logprob)``, scored as its negative (higher is better).

    The perplexity itself is in ``details["perplexity"]``.

    >>> import anyio
    >>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> c = Candidate(index=0, spec=spec, text="Paris", num_tokens=2, mean_logprob=-math.log(4))
    >>> s = anyio.run(Perplexity().score, Request(prompt="?"), [c])[0]
    >>> round(s.value, 6), round(s.details["perplexity"], 6)
    (-4.0, 4.0)
    """

    name = "perplexity"

    def to_config(self) -> PerplexityConfig:
        """The config that rebuilds this reranker."""
        return PerplexityConfig()

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        scores = []
        for c in candidates:
            mean = _mean_logprob(c)
            if mean is None:
                scores.append(Score(value=None))
                continue
            ppl = math.exp(min(-mean, 700.0))  # keep it finite for absurd inputs
            scores.append(Score(value=-ppl, details={"perplexity": ppl}))
        return scores


@RERANKERS.register("logprob", aliases=("mean_logprob",))
class MeanLogProbConfig(RerankerConfig):
    """``logprob``: per-token (length-normalised) log-probability (:class:`MeanLogProb`)."""

    kind: Literal["logprob"] = "logprob"
    reranker: ClassVar[Callable[..., Reranker] | None] = MeanLogProb
    client_safe: ClassVar[bool] = True


@RERANKERS.register("sumlogprob", aliases=("sum_logprob",))
class SumLogProbConfig(RerankerConfig):
    """``sumlogprob``: log-probability of the whole text (:class:`SumLogProb`)."""

    kind: Literal["sumlogprob"] = "sumlogprob"
    reranker: ClassVar[Callable[..., Reranker] | None] = SumLogProb
    client_safe: ClassVar[bool] = True


@RERANKERS.register("ppl", aliases=("perplexity",))
class PerplexityConfig(RerankerConfig):
    """``ppl``: negative per-token perplexity (:class:`Perplexity`)."""

    kind: Literal["ppl"] = "ppl"
    reranker: ClassVar[Callable[..., Reranker] | None] = Perplexity
    client_safe: ClassVar[bool] = True
