"""Rerankers that read the engine's log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence

from nbest.types import Candidate, Request, Score

__all__ = ["MeanLogProb"]


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

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        return [Score(value=c.mean_logprob) for c in candidates]
