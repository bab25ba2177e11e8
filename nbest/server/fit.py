"""Learn the Ranker's weights from logged choices (Bradley–Terry / logistic).

For every logged choice, each reranker's scores are z-normalised over that
request's candidates (as :class:`~nbest.rerankers.Ranker` does with several
rerankers). A person's choice says "chosen beats each other candidate" (a full
ranking says "each beats every one after it"); Bradley–Terry models
``P(a beats b) = sigmoid(w · (z_a - z_b))``. The weights ``w >= 0`` maximise
that likelihood (with a small L2 penalty). Their sum is the sharpness, so the
written config is ``weights / sum`` with ``temperature = 1 / sum``: the same
ranking and a confidence fitted to people's choices.

Agreement is how often the top-ranked candidate is the one a person chose;
:func:`fit_choices` reports it on held-out choices for the logged ranking,
for equal weights, and for the fitted weights.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field
from scipy.optimize import minimize  # type: ignore[import-untyped]

from nbest.errors import ConfigError
from nbest.rerankers.ranker import Normalize, Ranker, normalize
from nbest.rerankers.spec import BUILDERS, parse_spec
from nbest.server.prefs import Choice
from nbest.types import NbestModel

__all__ = ["FitReport", "RankerConfig", "fit_choices", "spec_name"]


class RankerConfig(NbestModel):
    """A ranker as data: reranker short forms with weights, normalisation, temperature."""

    rerankers: list[str] = Field(min_length=1)
    """``NAME[:ARG]=WEIGHT`` short forms (see ``nbest.rerankers.parse_spec``)."""
    normalize: Normalize = "zscore"
    """How each reranker's scores are normalised before weighting."""
    temperature: float = Field(default=1.0, gt=0)
    """Softmax temperature of the confidence."""

    def to_ranker(self) -> Ranker:
        """Build the Ranker (loads any reranker models).

        Raises:
            ConfigError: an unknown reranker or a bad weight.
        """
        parsed = [parse_spec(text) for text in self.rerankers]
        return Ranker(
            [r for r, _ in parsed], weights=[w for _, w in parsed], normalize=self.normalize, temperature=self.temperature
        )

    @classmethod
    def load(cls, path: str | Path) -> RankerConfig:
        """Read a config written by ``nbest prefs fit``.

        Raises:
            ConfigError: missing file, bad JSON or fields.
        """
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"ranker config {path}: {exc.strerror}", parameter="ranker", value=str(path)) from None
        try:
            return cls.parse(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ranker config {path}: invalid JSON ({exc.msg})", parameter="ranker", value=str(path)) from None


def spec_name(reranker: str) -> str | None:
    """The short form that rebuilds a reranker of this name, if there is one.

    >>> spec_name("mean_logprob"), spec_name("mbr_chrf"), spec_name("judge")
    ('mean_logprob', 'mbr:chrf', None)
    """
    if reranker in BUILDERS:
        return reranker
    if reranker.startswith("mbr_"):
        return "mbr:" + reranker.removeprefix("mbr_")
    if reranker == "source_sim":
        return "source"
    return None


@dataclass
class _Example:
    z: np.ndarray  # candidates x rerankers, z-normalised
    chosen: int  # row of the chosen candidate
    order: list[int]  # rows, best first as the person ranked them (at least the chosen one)
    logged_top: bool  # the logged ranking put the chosen one first


@dataclass
class FitReport:
    """What :func:`fit_choices` found."""

    rerankers: list[str]
    """Reranker names the weights apply to."""
    weights: dict[str, float]
    """Fitted weights (normalised to sum to 1)."""
    temperature: float
    """Confidence temperature (1 / the weights' fitted sum)."""
    train: int
    """Choices fitted on."""
    test: int
    """Held-out choices."""
    agreement_logged: float | None
    """Held-out agreement of the ranking that was logged with each choice."""
    agreement_equal: float | None
    """Held-out agreement with equal weights."""
    agreement_fitted: float | None
    """Held-out agreement with the fitted weights."""
    skipped: int = 0
    """Choices without two scored candidates (nothing to learn)."""
    notes: list[str] = field(default_factory=list)

    def config(self) -> RankerConfig:
        """The fitted ranker as a config.

        Raises:
            ConfigError: a reranker has no short form to rebuild it.
        """
        specs = []
        for name in self.rerankers:
            short = spec_name(name)
            if short is None:
                raise ConfigError(f"reranker {name!r} has no short form; build its Ranker in Python with weights {self.weights}")
            specs.append(f"{short}={self.weights[name]:.6g}")
        return RankerConfig(rerankers=specs, normalize="zscore", temperature=self.temperature)


def _examples(choices: Sequence[Choice], names: list[str]) -> list[_Example]:
    out = []
    for choice in choices:
        ok = [c for c in choice.result.candidates if c.ok]
        if len(ok) < 2 or not any(c.index == choice.chosen for c in ok):
            continue
        columns = [normalize([c.scores.get(name) for c in ok], "zscore") for name in names]
        z = np.array(columns, dtype=float).T
        row = {c.index: i for i, c in enumerate(ok)}
        chosen = row[choice.chosen]
        order = [row[i] for i in (choice.ranking or [choice.chosen]) if i in row]
        out.append(_Example(z, chosen, order, choice.chosen_rank == 1))
    return out


def _pairs(examples: Sequence[_Example]) -> np.ndarray:
    diffs = []
    for ex in examples:
        ranked = set(ex.order)
        for pos, winner in enumerate(ex.order):
            losers = ex.order[pos + 1 :] + [r for r in range(len(ex.z)) if r not in ranked]
            diffs += [ex.z[winner] - ex.z[loser] for loser in losers]
    return np.array(diffs, dtype=float).reshape(-1, examples[0].z.shape[1] if examples else 0)


def _agreement(examples: Sequence[_Example], w: np.ndarray) -> float | None:
    if not examples:
        return None
    hits = 0
    for ex in examples:
        scores = ex.z @ w
        top = min(range(len(scores)), key=lambda i: (-scores[i], i))
        hits += top == ex.chosen
    return hits / len(examples)


def fit_choices(choices: Sequence[Choice], *, holdout: float = 0.2, seed: int = 0, l2: float = 0.01) -> FitReport:
    """Fit reranker weights on logged choices; report held-out agreement.

    Raises:
            ConfigError: fewer than 2 usable choices, no reranker scored every
                choice, or a bad ``holdout``.
    """
    if not 0 <= holdout < 1:
        raise ConfigError("holdout: must be in [0, 1)", parameter="holdout", value=holdout)
    scored = [c for c in choices if any(cand.ok for cand in c.result.candidates)]
    shared: set[str] | None = None
    for choice in scored:
        keys = {k for cand in choice.result.candidates if cand.ok for k in cand.scores}
        shared = keys if shared is None else shared & keys
    names = sorted(shared or ())
    if not names:
        raise ConfigError("no reranker scored every logged choice: nothing to weigh", parameter="rerankers")
    examples = _examples(scored, names)
    skipped = len(choices) - len(examples)
    if len(examples) < 2:
        raise ConfigError(
            f"need at least 2 choices with two or more candidates to fit (have {len(examples)})", parameter="choices"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_test = min(len(examples) - 1, max(1, round(holdout * len(examples)))) if holdout > 0 else 0
    test = [examples[i] for i in order[:n_test]]
    train = [examples[i] for i in order[n_test:]]
    diffs = _pairs(train)
    k = len(names)
    notes = []

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        margins = diffs @ w
        value = float(np.sum(np.logaddexp(0.0, -margins))) + l2 * float(w @ w)
        grad = -(diffs.T @ (1.0 / (1.0 + np.exp(margins)))) + 2 * l2 * w
        return value, grad

    if len(diffs):
        fit = minimize(loss, np.ones(k), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * k)
        w = np.asarray(fit.x, dtype=float)
    else:
        w = np.zeros(k)
    total = float(w.sum())
    if not total > 1e-9 or not math.isfinite(total):
        notes.append("the choices show no preference the scores explain; kept equal weights")
        w, total = np.ones(k), float(k)
    return FitReport(
        rerankers=names,
        weights={name: float(v / total) for name, v in zip(names, w, strict=True)},
        temperature=1.0 / total,
        train=len(train),
        test=len(test),
        agreement_logged=sum(ex.logged_top for ex in test) / len(test) if test else None,
        agreement_equal=_agreement(test, np.ones(k)),
        agreement_fitted=_agreement(test, w),
        skipped=skipped,
        notes=notes,
    )
