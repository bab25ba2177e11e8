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

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize  # type: ignore[import-untyped]

from nbest.errors import ConfigError
from nbest.rerankers.ranker import normalize
from nbest.rerankers.registry import RankerConfig, RerankerConfig, config_for_name, reranker_config
from nbest.server.prefs import Choice

__all__ = ["FitReport", "RankerConfig", "fit_choices", "logged_configs"]


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
    configs: dict[str, RerankerConfig] = field(default_factory=dict)
    """Each reranker's config, as logged with the choices (see :func:`logged_configs`)."""

    def config(self) -> RankerConfig:
        """The fitted ranker as a config: each reranker's logged config with its fitted weight,
        so it loads back exactly (``vote:number`` keeps its extractor).

        Raises:
            ConfigError: a reranker whose config is unknown (neither logged nor a kind's default).
        """
        rerankers = []
        for name in self.rerankers:
            config = self.configs.get(name)
            if config is None:
                raise ConfigError(f"reranker {name!r} has no config; build its Ranker in Python with weights {self.weights}")
            rerankers.append(config.parse({**config.model_dump(), "weight": round(self.weights[name], 6)}))
        return RankerConfig(rerankers=rerankers, normalize="zscore", temperature=self.temperature)


def logged_configs(choices: Sequence[Choice], names: Sequence[str]) -> dict[str, RerankerConfig]:
    """Each named reranker's config: as the Results of ``choices`` recorded it
    (``Result.ranker``, the latest wins), else the default config of the kind
    whose rerankers carry that name (Results logged without one)."""
    found: dict[str, RerankerConfig] = {}
    for choice in choices:
        for item in (choice.result.ranker or {}).get("rerankers", []):
            try:
                config = reranker_config(item)
            except ConfigError:
                continue  # a kind no longer installed: its weight cannot be rebuilt anyway
            found[config.reranker_name()] = config
    for name in names:
        if name not in found and (default := config_for_name(name)) is not None:
            found[name] = default
    return {name: found[name] for name in names if name in found}


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
        configs=logged_configs(choices, names),
    )
