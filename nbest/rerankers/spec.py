"""The command line's short form of a reranker (``--reranker TEXT``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nbest.errors import ConfigError
from nbest.rerankers.base import Reranker
from nbest.rerankers.crossencoder import CrossEncoder
from nbest.rerankers.embedding import EmbeddingConsensus, SourceSimilarity
from nbest.rerankers.judge import LLMJudge
from nbest.rerankers.logprob import MeanLogProb, Perplexity, SumLogProb
from nbest.rerankers.mbr import MBR
from nbest.rerankers.reward import RewardModel
from nbest.rerankers.vote import MajorityVote

if TYPE_CHECKING:
    from nbest.engines.base import Engine

__all__ = ["BUILDERS", "parse_spec"]

BUILDERS: dict[str, Callable[[str], Reranker]] = {
    "logprob": lambda arg: MeanLogProb(),
    "mean_logprob": lambda arg: MeanLogProb(),
    "sumlogprob": lambda arg: SumLogProb(),
    "sum_logprob": lambda arg: SumLogProb(),
    "ppl": lambda arg: Perplexity(),
    "perplexity": lambda arg: Perplexity(),
    "vote": lambda arg: MajorityVote(extract=arg or "auto"),
    "embed": lambda arg: EmbeddingConsensus(model=arg or None),
    "mbr": lambda arg: _mbr(arg),
    "source": lambda arg: SourceSimilarity(model=arg or None),
    "cross": lambda arg: CrossEncoder(_model(arg, "cross")),
    "reward": lambda arg: RewardModel(_model(arg, "reward")),
}
"""Short name -> builder taking the text after ``name:`` (may be empty)."""


def _model(arg: str, name: str) -> str:
    if not arg:
        raise ConfigError(f"--reranker {name}: name the model, e.g. {name}:path/to/model", parameter="reranker", value=name)
    return arg


def _mbr(arg: str) -> Reranker:
    """``mbr[:UTILITY[:METHOD]]``, e.g. ``mbr:chrf``, ``mbr:bleu:aggregate``, ``mbr:embedding``."""
    utility, _, method = arg.partition(":")
    return MBR(utility or "chrf", method=method or "exact")  # type: ignore[arg-type]  # MBR validates


def parse_spec(text: str, *, engine: Engine | None = None) -> tuple[Reranker, float]:
    """Parse ``NAME[:ARG][=WEIGHT]`` into a reranker and its weight.

    ``judge[:RUBRIC]`` builds an :class:`~nbest.rerankers.judge.LLMJudge` on
    ``engine`` (the CLI passes the run's own engine).

    >>> r, w = parse_spec("logprob=2")
    >>> r.name, w
    ('mean_logprob', 2.0)

    Raises:
        ConfigError: unknown name (the message lists the known ones), a bad
            weight, ``judge`` without an engine.
    """
    body, _, weight_text = text.strip().partition("=")
    weight = 1.0
    if weight_text:
        try:
            weight = float(weight_text)
        except ValueError:
            raise ConfigError(f"--reranker {text!r}: weight must be a number", parameter="reranker", value=text) from None
        if weight < 0:
            raise ConfigError(f"--reranker {text!r}: weight must be >= 0", parameter="reranker", value=text)
    name, _, arg = body.partition(":")
    if name == "judge":
        if engine is None:
            raise ConfigError("--reranker judge: needs an engine to ask (the run's engine)", parameter="reranker", value=text)
        return (LLMJudge(engine, rubric=arg) if arg else LLMJudge(engine)), weight
    builder = BUILDERS.get(name)
    if builder is None:
        raise ConfigError(
            f"--reranker: unknown reranker {name!r}; known: {', '.join(sorted([*BUILDERS, 'judge']))}",
            parameter="reranker",
            value=text,
        )
    return builder(arg), weight
