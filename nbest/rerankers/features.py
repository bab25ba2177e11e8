"""Cheap candidate features as rerankers: what a learned ranker can weigh besides the scores.

Each feature is a number per candidate, computed from the candidate alone (or
from the candidates of its request, for ``share``), with no model:

========================  ==================================================================
``feature:tokens``        length of the answer in tokens
``feature:share``         vote share of the candidate's answer (as ``vote`` counts it: by meaning)
``feature:temperature``   the sampling temperature the strategy gave this candidate
``feature:length_stop``   1 when the answer was cut off at ``max_tokens``, else 0
``feature:model=ID``      1 when the engine/model ``ID`` produced the candidate, else 0
========================  ==================================================================

A feature reranker scores ``coef * value``. The Ranker z-normalises each
reranker's scores over the candidates before weighting them, so with a
non-negative ``weight`` the sign of ``coef`` says which way the feature pulls:
``feature:tokens`` with ``coef=-1`` prefers short answers. The learned ranker
(:func:`nbest.server.fit.fit_choices`) writes each feature as a reranker with
``weight = |w|`` and ``coef = ±1``; the same :func:`feature_values` computes
the feature at fit time from a logged Result, so the Ranker built from a fitted
config ranks exactly as the fitted model does.

>>> import anyio
>>> from nbest.types import Candidate, CandidateSpec, Request, SamplingParams
>>> spec = CandidateSpec(index=0, params=SamplingParams(temperature=0.7))
>>> texts = [("Paris", 2), ("paris.", 3), ("Lyon", 1)]
>>> cs = [Candidate(index=i, spec=spec, text=t, num_tokens=n) for i, (t, n) in enumerate(texts)]
>>> [s.value for s in anyio.run(FeatureReranker("tokens", coef=-1.0).score, Request(prompt="?"), cs)]
[-2.0, -3.0, -1.0]
>>> [round(v, 3) for v in feature_values("share", cs)]
[0.667, 0.667, 0.333]
>>> FeatureConfig.from_short("model=big").reranker_name()
'feature:model=big'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar, Literal, Self

from pydantic import field_validator

from nbest.errors import ConfigError
from nbest.rerankers.cluster import question_text, span_clusters
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.rerankers.vote import MajorityVote
from nbest.types import Candidate, Request, Score

__all__ = ["FEATURES", "FeatureConfig", "FeatureReranker", "answer_keys", "feature_meaning", "feature_values"]

FEATURES: dict[str, str] = {
    "tokens": "length of the answer in tokens",
    "share": "share of the candidates that give the same answer",
    "temperature": "sampling temperature of the candidate",
    "length_stop": "1 when the answer was cut off at max_tokens",
    "model": "1 when the candidate comes from this engine/model",
}
"""Every feature and what it measures (``model`` is written ``model=ID``)."""

_LEANS: dict[str, tuple[str, str]] = {
    "tokens": ("longer answers", "shorter answers"),
    "share": ("answers more candidates agree on", "answers few candidates give"),
    "temperature": ("candidates sampled hotter", "candidates sampled cooler"),
    "length_stop": ("answers cut off at max_tokens", "answers that finished"),
    "model": ("this model's candidates", "other models' candidates"),
}

MAX_MODEL_ID = 200
"""Longest engine/model id a ``model=ID`` feature may name (characters)."""


def _check_name(name: str) -> str:
    base, sep, model = name.partition("=")
    if base == "model" and sep:
        if not model or len(model) > MAX_MODEL_ID or not model.isprintable():
            raise ConfigError(
                f"feature: model=ID needs an engine/model id of 1 to {MAX_MODEL_ID} printable characters",
                parameter="feature",
                value=name[:80],
            )
        return name
    if base not in FEATURES or base == "model" or sep:
        raise ConfigError(
            f"feature: unknown feature {name[:80]!r}; use {', '.join(k for k in FEATURES if k != 'model')} or model=ID",
            parameter="feature",
            value=name[:80],
        )
    return name


def answer_keys(candidates: Sequence[Candidate], question: str = "") -> list[str | None]:
    """Each candidate's answer as the default ``vote`` counts it: extracted (boxed, else the last
    number, else the text), free-form answers clustered by meaning (the shared short answer
    span, :func:`~nbest.rerankers.cluster.span_clusters`, against ``question``); None: no answer.

    >>> from nbest.types import CandidateSpec, SamplingParams
    >>> spec = CandidateSpec(index=0, params=SamplingParams())
    >>> texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "Kyoto"]
    >>> answer_keys([Candidate(index=i, text=t, spec=spec) for i, t in enumerate(texts)], "What is the capital of Japan?")
    ['tokyo', 'tokyo', 'kyoto']
    """
    vote = MajorityVote()
    keys = [vote.answer(c.text) for c in candidates]
    free = [i for i, c in enumerate(candidates) if keys[i] is not None and vote.free_form(c.text) is not None]
    if len(free) >= 2:
        texts = [vote.free_form(candidates[i].text) or "" for i in free]
        for name, members in span_clusters(question, texts).items():
            for m in members:
                keys[free[m]] = name
    return keys


def feature_values(name: str, candidates: Sequence[Candidate], question: str = "") -> list[float]:
    """Feature ``name`` of each candidate (the successful candidates of one request,
    as the Ranker scores them); ``question`` (the request's) is what ``share`` clusters
    free-form answers against.

    Raises:
        ConfigError: an unknown feature.
    """
    _check_name(name)
    if name == "tokens":
        return [float(c.num_tokens) for c in candidates]
    if name == "temperature":
        return [float(c.spec.params.temperature) for c in candidates]
    if name == "length_stop":
        return [1.0 if c.finish_reason == "length" else 0.0 for c in candidates]
    if name == "share":  # the answer as the vote reranker counts it (see answer_keys)
        keys = answer_keys(candidates, question)
        counts = Counter(k for k in keys if k)
        return [counts[k] / len(candidates) if k else 0.0 for k in keys]
    model = name.partition("=")[2]
    return [1.0 if c.spec.engine == model else 0.0 for c in candidates]


def feature_meaning(name: str, weight: float | None = None) -> str:
    """What feature ``name`` measures, and (with its learned signed ``weight``) what that weight prefers.

    >>> feature_meaning("tokens", -0.4)
    'length of the answer in tokens; this weight prefers shorter answers'

    Raises:
        ConfigError: an unknown feature.
    """
    _check_name(name)
    base, _, model = name.partition("=")
    text = FEATURES[base] + (f" ({model})" if model else "")
    if weight is None or weight == 0 or not math.isfinite(weight):
        return text
    up, down = _LEANS[base]
    return f"{text}; this weight prefers {up if weight > 0 else down}"


class FeatureReranker:
    """Scores ``coef * feature`` for every candidate (see the module docstring)."""

    def __init__(self, feature: str, *, coef: float = 1.0) -> None:
        self.feature = _check_name(feature)
        if not math.isfinite(coef):
            raise ConfigError("coef: must be a finite number", parameter="coef", value=coef)
        self.coef = coef
        self.name = f"feature:{feature}"

    def to_config(self) -> FeatureConfig:
        """The config that rebuilds this reranker."""
        return FeatureConfig(feature=self.feature, coef=self.coef)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        if not candidates:
            return []
        question = question_text(request.prompt)
        return [Score(value=self.coef * v) for v in feature_values(self.feature, candidates, question)]


@RERANKERS.register("feature")
class FeatureConfig(RerankerConfig):
    """``feature:NAME``: a cheap candidate feature (:class:`FeatureReranker`): tokens, share,
    temperature, length_stop or model=ID.

    >>> FeatureConfig.from_short("tokens").model_dump()
    {'kind': 'feature', 'weight': 1.0, 'feature': 'tokens', 'coef': 1.0}
    """

    kind: Literal["feature"] = "feature"
    feature: str
    """Which feature: tokens, share, temperature, length_stop, or model=ID."""
    coef: float = 1.0
    """Multiplies the feature before the Ranker normalises it: negative turns it around
    (``feature:tokens`` with ``coef=-1`` prefers short answers)."""

    short_help: ClassVar[str] = "feature:NAME"
    client_safe: ClassVar[bool] = True

    @field_validator("feature")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            return _check_name(value)
        except ConfigError as exc:  # pydantic names the field itself
            raise ValueError(str(exc).removeprefix("feature: ")) from None

    @field_validator("coef")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @classmethod
    def from_short(cls, arg: str) -> Self:
        if not arg:
            raise ConfigError(
                f"feature: name one, as feature:NAME ({', '.join(k for k in FEATURES if k != 'model')} or model=ID)",
                parameter="feature",
            )
        return cls(feature=arg)

    def reranker_name(self) -> str:
        return f"feature:{self.feature}"

    def build(self, *, engine: Generator | None = None) -> FeatureReranker:
        return FeatureReranker(self.feature, coef=self.coef)
