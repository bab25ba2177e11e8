"""Calibrating a selected answer's confidence: fitted on one split, applied on another.

The confidence an evaluation scores is the selected answer's: its vote share
(plain or weighted votes) or its candidates' summed softmax confidence. Those
are probabilities of different makings, and none is calibrated out of the box
(a 135M model's 16 agreeing samples are right far less often than 16/16).
Two maps on the confidence's log-odds fix most of it, each fitted by log-loss
on labelled answers of a *tuning* split and applied unchanged to the held-out
split (fitting on the set one reports on would flatter the ECE):

- **temperature scaling** (Guo et al., 2017), one number:
  ``calibrated = sigmoid(logit(confidence) / T)``. ``T > 1`` tempers an
  over-confident signal, ``T < 1`` sharpens a timid one; it can only stretch
  the log-odds around 0.5, so a signal that is wrong half the time at every
  level it claims (a low-accuracy task) is out of its reach.
- **Platt scaling** (Platt, 1999), a :class:`ConfidenceMap`:
  ``calibrated = sigmoid(scale * logit(confidence) + bias)``; the bias moves the
  whole curve, so "right 20 % of the time when it says 60 %" is reachable.
  Temperature scaling is the case ``bias = 0``, ``scale = 1 / T``.

With few right answers (a tuning split of 81 prompts at 14 % accuracy holds
~11) a free two-parameter fit runs wild, so :func:`fit_confidence_map` pulls
``(scale - 1, bias)`` toward the identity map with an L2 penalty of
:data:`PLATT_STRENGTH`: a unit Gaussian prior on both, a priori the slope
within 1 +/- 1 and the shift within +/- 1 log-odds. Near 0.5 one answer tells
at most 1/4 about the bias (the log-loss's curvature ``p(1 - p)``), so the
penalty weighs like four or more answers: three cannot move the map far,
eighty dominate it. The scale stays at least :data:`MIN_SCALE` (> 0): the map
is monotone, and the order of the confidences, so AUROC and PRR, is unchanged.

>>> t = fit_confidence_temperature([0.9, 0.9, 0.9, 0.9], [True, True, True, False])  # 0.9 claimed, 0.75 right
>>> round(t, 2), round(scale_confidence(0.9, t), 3)
(2.0, 0.75)
>>> right = [True] * 2 + [False] * 8 + [True] + [False] * 9  # 0.6 claimed, 0.2 right; 0.3 claimed, 0.1 right
>>> m = fit_confidence_map([0.6] * 10 + [0.3] * 10, right, strength=0.0)
>>> round(m(0.6), 3), round(m(0.3), 3)  # beyond a temperature's reach: 0.6 can only move away from 0.5 or toward it
(0.2, 0.1)
>>> ConfidenceMap.from_temperature(2.0)
ConfidenceMap(scale=0.5, bias=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from nbest.errors import ConfigError
from nbest.rerankers.calibrate import Example, fit_temperature
from nbest.types import NbestModel

__all__ = [
    "MIN_SCALE",
    "PLATT_STRENGTH",
    "ConfidenceMap",
    "apply_calibration",
    "fit_confidence_map",
    "fit_confidence_temperature",
    "scale_confidence",
]

_EPS = 1e-6
"""Confidences are kept inside [eps, 1 - eps]: a unanimous vote (1.0) has finite log-odds."""
PLATT_STRENGTH = 1.0
"""L2 penalty on ``(scale - 1, bias)`` of a Platt fit (the reason: the module docs)."""
MIN_SCALE = 1e-3
"""Smallest fitted scale: the map stays increasing even for a confidence that is
right less often the higher it is (such a signal gets a near-constant map)."""
_MAX_ITER = 100


def _logit(p: float) -> float:
    p = min(1.0 - _EPS, max(_EPS, p))
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ConfidenceMap(NbestModel):
    """``calibrated = sigmoid(scale * logit(confidence) + bias)``: Platt scaling of a
    confidence (``scale = 1 / T``, ``bias = 0`` is temperature scaling). Call it on a
    confidence in [0, 1].

    Raises (when built):
        ConfigError: a scale that is not a positive finite number, a bias that is not finite.
    """

    scale: float = Field(gt=0.0)
    """Stretch of the log-odds (> 0: the map keeps the confidences' order)."""
    bias: float = 0.0
    """Shift of the log-odds after stretching (negative: less confident everywhere)."""

    @classmethod
    def from_temperature(cls, temperature: float) -> ConfidenceMap:
        """The map of temperature scaling by ``temperature``.

        Raises:
            ConfigError: a temperature that is not a positive finite number.
        """
        _check_temperature(temperature)
        return cls(scale=1.0 / temperature, bias=0.0)

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.bias == 0.0

    def __call__(self, confidence: float) -> float:
        if self.identity:
            return confidence
        return _sigmoid(self.scale * _logit(confidence) + self.bias)


def _check_temperature(temperature: object) -> None:
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ConfigError(f"temperature: must be a positive number (got {temperature!r})", parameter="temperature")


def scale_confidence(confidence: float, temperature: float) -> float:
    """``sigmoid(logit(confidence) / temperature)``; ``temperature == 1`` returns it unchanged.

    Raises:
        ConfigError: a temperature that is not a positive finite number.
    """
    _check_temperature(temperature)
    if temperature == 1.0:
        return confidence
    return _sigmoid(_logit(confidence) / temperature)


def apply_calibration(confidence: float, calibration: float | ConfidenceMap) -> float:
    """``confidence`` through a fitted temperature (a number) or a :class:`ConfidenceMap`.

    >>> apply_calibration(0.9, 1.0), round(apply_calibration(0.5, ConfidenceMap(scale=1.0, bias=math.log(3))), 3)
    (0.9, 0.75)

    Raises:
        ConfigError: a temperature that is not a positive finite number.
    """
    if isinstance(calibration, ConfidenceMap):
        return calibration(confidence)
    return scale_confidence(confidence, calibration)


def _check(confidences: Sequence[float], correct: Sequence[bool]) -> bool:
    """False when there is nothing to fit (no answers, all right or all wrong)."""
    if len(confidences) != len(correct):
        raise ConfigError("confidences and correct: must be as long as each other", parameter="correct")
    if any(not (isinstance(c, (int, float)) and 0.0 <= c <= 1.0) for c in confidences):
        raise ConfigError("confidences: must lie in [0, 1]", parameter="confidences")
    return bool(confidences) and any(correct) and not all(correct)


def fit_confidence_temperature(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """The temperature that minimises the log-loss of the scaled confidences; None when
    there is nothing to fit (no answers, or all right or all wrong: any T > 0 then only
    pushes towards 0 or 1, which says nothing about the next split).

    The fit reuses :func:`nbest.rerankers.calibrate.fit_temperature`: an answer with
    confidence ``p`` is the two-way softmax of ``[logit(p), 0]`` (is right, is wrong),
    whose log-loss at temperature ``T`` is that of the scaled confidence.

    Raises:
        ConfigError: lists of different lengths or a confidence outside [0, 1].
    """
    if not _check(confidences, correct):
        return None
    examples = [Example([_logit(c), 0.0], {0 if right else 1}) for c, right in zip(confidences, correct, strict=True)]
    return fit_temperature(examples, bounds=(1e-2, 1e2)).temperature


def _objective(xs: Sequence[float], ys: Sequence[int], a: float, b: float, strength: float, prior: ConfidenceMap) -> float:
    loss = 0.0
    for x, y in zip(xs, ys, strict=True):
        z = a * x + b
        loss += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y * z  # log(1 + e^z) - y z, stable
    return loss + strength / 2 * ((a - prior.scale) ** 2 + (b - prior.bias) ** 2)


def _newton(
    xs: Sequence[float], ys: Sequence[int], strength: float, prior: ConfidenceMap, scale: float | None
) -> tuple[float, float]:
    """Minimise :func:`_objective` over (a, b), or over b alone with ``a = scale`` fixed.

    The objective is convex (a logistic regression on one feature plus an L2 term), so a
    damped Newton step from the prior map reaches its minimum; ~10 steps in practice."""
    a, b = (prior.scale if scale is None else scale), prior.bias
    current = _objective(xs, ys, a, b, strength, prior)
    for _ in range(_MAX_ITER):
        ga, gb = strength * (a - prior.scale), strength * (b - prior.bias)
        haa = hbb = strength
        hab = 0.0
        for x, y in zip(xs, ys, strict=True):
            q = _sigmoid(a * x + b)
            w = q * (1.0 - q)
            ga += (q - y) * x
            gb += q - y
            haa += w * x * x
            hab += w * x
            hbb += w
        hbb = max(hbb, 1e-12)  # strength 0 and every point saturated: keep the step finite
        if scale is None:
            det = haa * hbb - hab * hab
            if det <= 1e-12:
                da, db = 0.0, gb / hbb
            else:
                da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        else:
            da, db = 0.0, gb / hbb
        step = 1.0
        while step > 1e-10:
            na, nb = a - step * da, b - step * db
            value = _objective(xs, ys, na, nb, strength, prior)
            if value <= current:
                break
            step /= 2
        else:
            break
        moved = abs(na - a) + abs(nb - b)
        a, b, current = na, nb, value
        if moved < 1e-10:
            break
    return a, b


def fit_confidence_map(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    strength: float = PLATT_STRENGTH,
    toward: ConfidenceMap | None = None,
) -> ConfidenceMap | None:
    """The Platt map minimising the log-loss of the mapped confidences plus ``strength / 2``
    times ``(scale - 1)^2 + bias^2`` (see the module docs); None when there is nothing to
    fit (no answers, all right or all wrong), as for :func:`fit_confidence_temperature`.

    ``strength = 0`` is the plain maximum-likelihood fit. ``toward`` moves the penalty's
    centre from the identity to another map (e.g. one fitted on more data of a kindred
    confidence). The scale is held at :data:`MIN_SCALE` or more (a monotone map); at
    that bound the bias alone is fitted.

    Raises:
        ConfigError: lists of different lengths, a confidence outside [0, 1], or a
            strength that is not a finite number >= 0 (``strength``).
    """
    if isinstance(strength, bool) or not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
        raise ConfigError(f"strength: must be a finite number >= 0 (got {strength!r})", parameter="strength", value=strength)
    if not _check(confidences, correct):
        return None
    xs = [_logit(c) for c in confidences]
    ys = [1 if right else 0 for right in correct]
    prior = toward if toward is not None else ConfidenceMap(scale=1.0)
    a, b = _newton(xs, ys, float(strength), prior, None)
    if a < MIN_SCALE:
        a, b = _newton(xs, ys, float(strength), prior, MIN_SCALE)
    return ConfidenceMap(scale=a, bias=b)
