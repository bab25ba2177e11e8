"""Learn the Ranker's weights from logged choices (Plackett–Luce, or Bradley–Terry on pairs).

For every logged choice, each reranker's scores are z-normalised over that
request's candidates (as :class:`~nbest.rerankers.Ranker` does with several
rerankers); so are the cheap candidate features asked for
(:mod:`nbest.rerankers.features`: length in tokens, answer share, temperature,
cut-off, the model that produced it), computed from the logged candidates by
the same function the ``feature`` reranker uses at serving time.

A person's choice picks one card out of the candidates shown: the chosen
candidate, or the group of equivalent candidates it stands for. The default
model (``objective="choice"``) is Plackett–Luce, the conditional logit of that
pick: ``P(group) = sum_{i in group} exp(w · z_i) / sum_{j shown} exp(w · z_j)``;
a full ranking is a sequence of such picks, each among the candidates not yet
placed (with two candidates this is Bradley–Terry). ``objective="pairs"`` is
Bradley–Terry on every pair a choice orders (``P(a beats b) = sigmoid(w · (z_a -
z_b))``: the chosen one, or each of its group, beats each other candidate). The
pick is the better model of a choice: pairs count a group of k candidates
k times against each loser and weigh a choice by how many candidates it beat,
and on simulated people who choose the right answer of a labelled set the
pairs fit ranks its top candidate worse (``benchmarks/learning_curve.py``,
README "Performance").

The weights maximise that likelihood with an L2 penalty ``l2 · ||w - w_prior||²``
(toward 0 without a prior; toward the current ranker's weights with one, so a
few choices cannot swing them), plus a lasso ``λ · sum |w_feature|`` with
``λ = feature_l1 · sqrt(choices fitted)``: a feature enters the ranker only when
the choices pull on it harder than chance would (the pull of random picks on a
z-normalised feature spreads as the square root of their number; the default,
2, is about two standard errors), so features that merely fit the noise of a
few dozen choices stay at exactly 0 while a clear taste (people who always pick
the shortest answer) still comes through. Reranker weights stay ``>= 0``; feature
weights are signed (a negative ``tokens`` weight prefers short answers). The
sum of ``|w|`` is the sharpness, so the written config is ``|w| / sum`` (a
feature's sign goes into its ``coef``) with ``temperature = 1 / sum``: the same
ranking and a confidence fitted to people's choices.

Agreement is how often the top-ranked candidate is the one a person chose (for
a choice on a group: one of the group); :func:`fit_choices` reports it on
held-out choices for the logged ranking, for equal weights, for the prior and
for the fitted config. The fitted agreement is measured with the config's own
(rounded) weights and the Ranker's tie-break (lower index first), so it is what
the Ranker built from that config would score on those choices.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize  # type: ignore[import-untyped]

from nbest.errors import ConfigError
from nbest.rerankers.cluster import question_text
from nbest.rerankers.features import FeatureConfig, feature_values
from nbest.rerankers.ranker import normalize
from nbest.rerankers.registry import RankerConfig, RerankerConfig, config_for_name, reranker_config
from nbest.server.prefs import Choice

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_FEATURE_L1",
    "MAX_MODEL_FEATURES",
    "OBJECTIVES",
    "FitReport",
    "Objective",
    "RankerConfig",
    "default_features",
    "effective_weights",
    "fit_choices",
    "logged_configs",
]

DEFAULT_FEATURES = ("tokens", "share", "temperature", "length_stop")
"""The features a learner fits besides the rerankers' scores (plus ``model=ID``, see :func:`default_features`)."""

MAX_MODEL_FEATURES = 8
"""At most this many ``model=ID`` one-hot features (the most frequent engines) enter a fit."""

_FEATURE = "feature:"

DEFAULT_FEATURE_L1 = 2.0
"""The lasso on feature weights a learning server uses (:class:`~nbest.server.learn.Learner`),
per square root of the choices fitted.

Measured on simulated people (README "Performance"): with none, the 4 default
features took weight from the scores within 100 choices and held-out agreement
fell back toward where it started; with it they stay at 0 unless the choices lean
on them clearly (60 choices of the shortest answer give ``tokens`` its weight)."""

Objective = Literal["choice", "pairs"]
OBJECTIVES: tuple[Objective, ...] = ("choice", "pairs")
"""How a fit reads a choice: ``choice`` (Plackett–Luce, the default) or ``pairs`` (Bradley–Terry)."""


@dataclass
class _Example:
    z: list[list[float]]  # candidates x columns, z-normalised
    indices: list[int]  # the candidate index of each row
    tiers: list[list[int]]  # rows, best tier first: each beats every row of later tiers and every row in none
    logged_top: bool  # the logged ranking put a chosen candidate first

    @property
    def hits(self) -> list[int]:
        return self.tiers[0]


@dataclass
class FitReport:
    """What :func:`fit_choices` found."""

    rerankers: list[str]
    """Column names the weights apply to: rerankers, then features (``feature:NAME``)."""
    weights: dict[str, float]
    """Fitted weights (``|w|`` normalised to sum to 1; a feature's is signed)."""
    temperature: float
    """Confidence temperature (1 / the weights' fitted sum)."""
    train: int
    """Choices fitted on."""
    test: int
    """Held-out choices."""
    agreement_logged: float | None
    """Held-out agreement of the ranking that was logged with each choice."""
    agreement_equal: float | None
    """Held-out agreement with equal reranker weights (features left out)."""
    agreement_fitted: float | None
    """Held-out agreement of the fitted config."""
    skipped: int = 0
    """Choices without two scored candidates (nothing to learn)."""
    notes: list[str] = field(default_factory=list)
    configs: dict[str, RerankerConfig] = field(default_factory=dict)
    """Each reranker's config, as logged with the choices (see :func:`logged_configs`)."""
    agreement_prior: float | None = None
    """Held-out agreement of the prior (the ranker the fit started from), None without one."""
    features: list[str] = field(default_factory=list)
    """The feature columns (``feature:NAME``), also in :attr:`rerankers`."""

    def config(self) -> RankerConfig:
        """The fitted ranker as a config: each reranker's logged config with its fitted weight,
        so it loads back exactly (``vote:number`` keeps its extractor), then one ``feature``
        reranker per feature (weight ``|w|``, ``coef`` its sign).

        Raises:
            ConfigError: a reranker whose config is unknown (neither logged nor a kind's default).
        """
        rerankers: list[RerankerConfig] = []
        for name in self.rerankers:
            weight = self.weights[name]
            if name.startswith(_FEATURE):
                coef = -1.0 if weight < 0 else 1.0
                rerankers.append(FeatureConfig(feature=name[len(_FEATURE) :], coef=coef, weight=round(abs(weight), 6)))
                continue
            config = self.configs.get(name)
            if config is None:
                raise ConfigError(f"reranker {name!r} has no config; build its Ranker in Python with weights {self.weights}")
            rerankers.append(config.parse({**config.model_dump(), "weight": round(weight, 6)}))
        return RankerConfig(rerankers=rerankers, normalize="zscore", temperature=self.temperature)


def effective_weights(config: RankerConfig) -> dict[str, float]:
    """Each reranker's weight on its z-normalised score in the model the config
    stands for: ``weight / temperature``, signed by a feature's ``coef``.

    >>> tokens = {"kind": "feature", "feature": "tokens", "coef": -1}
    >>> effective_weights(RankerConfig(rerankers=["vote=2", tokens], temperature=0.5))
    {'vote': 4.0, 'feature:tokens': -2.0}
    """
    out = {}
    for rc in config.rerankers:
        sign = -1.0 if isinstance(rc, FeatureConfig) and rc.coef < 0 else 1.0
        if isinstance(rc, FeatureConfig) and rc.coef == 0:
            sign = 0.0
        out[rc.reranker_name()] = sign * rc.weight / config.temperature
    return out


def default_features(choices: Sequence[Choice], *, max_models: int = MAX_MODEL_FEATURES) -> list[str]:
    """:data:`DEFAULT_FEATURES`, plus ``model=ID`` for the ``max_models`` engines that produced
    the most candidates when the choices saw more than one engine."""
    engines = Counter(c.spec.engine for choice in choices for c in choice.result.candidates if c.ok)
    models = [f"model={engine}" for engine, _ in engines.most_common(max_models)] if len(engines) > 1 else []
    return [*DEFAULT_FEATURES, *models]


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


def _examples(choices: Sequence[Choice], names: list[str], features: list[str]) -> list[_Example]:
    out = []
    for choice in choices:
        ok = [c for c in choice.result.candidates if c.ok]
        if len(ok) < 2 or not any(c.index == choice.chosen for c in ok):
            continue
        if any(all(name not in c.scores for c in ok) for name in names):
            continue  # ranked without one of the rerankers: nothing to say about its weight
        columns = [normalize([c.scores.get(name) for c in ok], "zscore") for name in names]
        question = question_text(choice.result.prompt)
        columns += [normalize(list(feature_values(f, ok, question)), "zscore") for f in features]
        z = [[col[i] for col in columns] for i in range(len(ok))]
        row = {c.index: i for i, c in enumerate(ok)}
        group = [row[i] for i in [choice.chosen, *(choice.group or [])] if i in row]
        first = list(dict.fromkeys(group))
        tiers = [first] + [[row[i]] for i in (choice.ranking or []) if i in row and row[i] not in first]
        top = next((c.index for c in ok if c.rank == 1), None)
        logged_top = top is not None and top in {ok[r].index for r in first}
        out.append(_Example(z, [c.index for c in ok], tiers, logged_top))
    return out


def _pairs(examples: Sequence[_Example], k: int) -> np.ndarray:
    """Bradley–Terry's pairs: ``z_winner - z_loser`` for every winner of a tier and every
    row it beats (rows of later tiers and rows in no tier)."""
    diffs = []
    for ex in examples:
        z = np.asarray(ex.z, dtype=float)
        placed: set[int] = set()
        later = [r for tier in ex.tiers for r in tier]
        for tier in ex.tiers:
            placed.update(tier)
            losers = [r for r in later if r not in placed] + [r for r in range(len(z)) if r not in later]
            diffs += [z[winner] - z[loser] for winner in tier for loser in losers]
    return np.array(diffs, dtype=float).reshape(-1, k)


@dataclass
class _Stages:
    """Plackett–Luce's stages, padded: stage ``s`` picks the rows ``rows[s][picked[s]]``
    out of the rows ``rows[s][left[s]]`` not placed by an earlier stage."""

    x: np.ndarray  # all candidates' rows (stacked), columns z-normalised
    rows: np.ndarray  # stages x width: row numbers into x (0 where padded)
    picked: np.ndarray  # stages x width: the stage's tier
    left: np.ndarray  # stages x width: the rows still unplaced (the tier among them)


def _stages(examples: Sequence[_Example], k: int) -> _Stages:
    xs: list[list[float]] = []
    stages: list[tuple[list[int], list[bool]]] = []
    for ex in examples:
        offset = len(xs)
        xs.extend(ex.z)
        unplaced = list(range(len(ex.z)))
        for tier in ex.tiers:
            chosen = set(tier)
            if not chosen or all(r in chosen for r in unplaced):
                break  # nothing left for the tier to beat
            stages.append(([offset + r for r in unplaced], [r in chosen for r in unplaced]))
            unplaced = [r for r in unplaced if r not in chosen]
    width = max((len(members) for members, _ in stages), default=0)
    rows = np.zeros((len(stages), width), dtype=int)
    picked = np.zeros((len(stages), width), dtype=bool)
    left = np.zeros((len(stages), width), dtype=bool)
    for s, (placed, mask) in enumerate(stages):
        rows[s, : len(placed)] = placed
        picked[s, : len(placed)] = mask
        left[s, : len(placed)] = True
    return _Stages(np.asarray(xs, dtype=float).reshape(-1, k), rows, picked, left)


def _log_softmax_parts(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stage: log of the summed ``exp(score)`` over ``mask``, and each masked row's share of it."""
    masked = np.where(mask, scores, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(masked - top), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.log(total[:, 0]) + top[:, 0], e / total


def _choice_loss(stages: _Stages, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of the stages under Plackett–Luce, and its gradient."""
    if not len(stages.rows):
        return 0.0, np.zeros_like(w)
    scores = (stages.x @ w)[stages.rows]
    num, p_num = _log_softmax_parts(scores, stages.picked)
    den, p_den = _log_softmax_parts(scores, stages.left)
    per_row = np.zeros(len(stages.x))
    np.add.at(per_row, stages.rows, p_den - p_num)
    return float(np.sum(den - num)), stages.x.T @ per_row


def _top(ex: _Example, w: Sequence[float]) -> int:
    scores = []
    for values in ex.z:  # summed as the Ranker sums (column by column from 0.0): the same ties
        total = 0.0
        for weight, v in zip(w, values, strict=True):
            total += weight * v
        scores.append(total)
    return min(range(len(scores)), key=lambda i: (-scores[i], ex.indices[i]))


def _agreement(examples: Sequence[_Example], w: Sequence[float]) -> float | None:
    if not examples:
        return None
    return sum(_top(ex, w) in ex.hits for ex in examples) / len(examples)


def _minimize(
    loss: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray, is_feature: np.ndarray, l1: float
) -> np.ndarray:
    """Minimise ``loss(w) + l1 · sum |w_feature|`` with reranker weights ``>= 0``.

    Each feature weight is split into a positive and a negative part, both ``>= 0``
    (``w = a - b``), so the L1 term is linear and L-BFGS-B handles it with bounds;
    a feature whose pull on the choices is below ``l1`` stays at exactly 0."""
    k = len(start)
    feat = np.flatnonzero(is_feature)

    def split_loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        w = v[:k].copy()
        w[feat] -= v[k:]
        value, grad = loss(w)
        full = np.concatenate([grad, -grad[feat]])
        full[feat] += l1
        full[k:] += l1
        return value + l1 * float(v[feat].sum() + v[k:].sum()), full

    v0 = np.concatenate([np.maximum(start, 0.0), np.maximum(-start[feat], 0.0)])
    fit = minimize(split_loss, v0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * len(v0))
    v = np.asarray(fit.x, dtype=float)
    w = v[:k].copy()
    w[feat] -= v[k:]
    return w


def fit_choices(
    choices: Sequence[Choice],
    *,
    holdout: float = 0.2,
    seed: int = 0,
    l2: float = 0.01,
    prior: RankerConfig | None = None,
    features: Sequence[str] | None = None,
    rerankers: Sequence[str] | None = None,
    objective: Objective = "choice",
    feature_l1: float = 0.0,
) -> FitReport:
    """Fit reranker (and feature) weights on logged choices; report held-out agreement.

    Args:
        choices: the logged choices (withdrawn ones are left out).
        holdout: the fraction held out to measure agreement (split by ``seed``).
        l2: the penalty ``l2 · ||w - w_prior||²``.
        prior: the ranker to start from and regularise toward (its features join the columns).
        features: feature names to fit besides the scores (``tokens``, ``share``,
            ``temperature``, ``length_stop``, ``model=ID``); None: none (as
            :data:`DEFAULT_FEATURES` shows, the learner passes them).
        rerankers: the reranker names to weigh; a choice whose candidates lack one is
            skipped. Default: the rerankers that scored every choice.
        feature_l1: the lasso ``feature_l1 · sqrt(choices fitted) · sum |w_feature|`` that
            keeps a feature at 0 unless the choices pull on it harder (0: none).
        objective: ``choice`` (Plackett–Luce: each choice picks its group out of the
            candidates shown) or ``pairs`` (Bradley–Terry on every pair it orders).

    Raises:
            ConfigError: fewer than 2 usable choices, no reranker scored every
                choice, an unknown feature, or a bad ``holdout``, ``l2``,
                ``feature_l1`` or ``objective``.
    """
    if not 0 <= holdout < 1:
        raise ConfigError("holdout: must be in [0, 1)", parameter="holdout", value=holdout)
    if not (l2 >= 0 and math.isfinite(l2)):
        raise ConfigError("l2: must be a non-negative number", parameter="l2", value=l2)
    if not (feature_l1 >= 0 and math.isfinite(feature_l1)):
        raise ConfigError("feature_l1: must be a non-negative number", parameter="feature_l1", value=feature_l1)
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective: {objective!r}; use {' or '.join(OBJECTIVES)}", parameter="objective", value=objective)
    choices = [c for c in choices if c.withdrawn is None]
    scored = [c for c in choices if any(cand.ok for cand in c.result.candidates)]
    prior_weights = effective_weights(prior) if prior is not None else {}
    feature_names = list(
        dict.fromkeys([*(features or ()), *(n[len(_FEATURE) :] for n in prior_weights if n.startswith(_FEATURE))])
    )
    if rerankers is not None:
        names = list(dict.fromkeys(n for n in rerankers if not n.startswith(_FEATURE)))
    else:
        shared: set[str] | None = None
        for choice in scored:
            keys = {k for cand in choice.result.candidates if cand.ok for k in cand.scores if not k.startswith(_FEATURE)}
            shared = keys if shared is None else shared & keys
        names = sorted(shared or ())
    if not names and not feature_names:
        raise ConfigError("no reranker scored every logged choice: nothing to weigh", parameter="rerankers")
    columns = names + [_FEATURE + f for f in feature_names]
    examples = _examples(scored, names, feature_names)
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
    k = len(columns)
    is_feature = np.array([c.startswith(_FEATURE) for c in columns])
    w0 = np.array([prior_weights.get(c, 0.0) for c in columns], dtype=float)
    notes = []
    if objective == "choice":
        stages = _stages(train, k)
        informative = len(stages.rows) > 0

        def data_loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            return _choice_loss(stages, w)
    else:
        diffs = _pairs(train, k)
        informative = len(diffs) > 0

        def data_loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            margins = diffs @ w
            return float(np.sum(np.logaddexp(0.0, -margins))), -(diffs.T @ (0.5 * (1.0 - np.tanh(margins / 2))))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = data_loss(w)
        return value + l2 * float((w - w0) @ (w - w0)), grad + 2 * l2 * (w - w0)

    start = w0 if prior is not None else np.where(is_feature, 0.0, 1.0)
    lasso = feature_l1 * math.sqrt(len(train))  # the spread of a pull that chance alone gives grows as sqrt(choices)
    w = _minimize(loss, start, is_feature, lasso) if informative else np.zeros(k)
    total = float(np.abs(w).sum())
    if not total > 1e-9 or not math.isfinite(total):
        notes.append(
            "the choices show no preference the scores explain; kept " + ("the prior's weights" if prior else "equal weights")
        )
        w = start.astype(float) if float(np.abs(start).sum()) > 1e-9 else np.ones(k)
        total = float(np.abs(w).sum())
    weights = {name: round(float(v / total), 6) for name, v in zip(columns, w, strict=True)}
    fitted = [weights[c] for c in columns]
    equal = [0.0 if f else 1.0 for f in is_feature] if names else [1.0] * k
    return FitReport(
        rerankers=columns,
        weights={name: float(v / total) for name, v in zip(columns, w, strict=True)},
        temperature=1.0 / total,
        train=len(train),
        test=len(test),
        agreement_logged=sum(ex.logged_top for ex in test) / len(test) if test else None,
        agreement_equal=_agreement(test, equal),
        agreement_fitted=_agreement(test, fitted),
        skipped=skipped,
        notes=notes,
        configs=logged_configs(choices, names),
        agreement_prior=_agreement(test, list(w0)) if prior is not None else None,
        features=[_FEATURE + f for f in feature_names],
    )
