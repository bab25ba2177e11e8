"""Temperature scaling of a selected answer's confidence, fitted on one split, applied on another.

The confidence an evaluation scores is the selected answer's: its vote share
(plain or weighted votes) or its candidates' summed softmax confidence. Those
are probabilities of different makings, and none is calibrated out of the box
(a 135M model's 16 agreeing samples are right far less often than 16/16).
One number fixes most of it: scale the confidence's log-odds by ``1 / T``,

    calibrated = sigmoid(logit(confidence) / T)

with ``T`` fitted on labelled answers of a *tuning* split, then applied
unchanged to the held-out split (fitting on the set one reports on would
flatter the ECE). ``T > 1`` tempers an over-confident signal, ``T < 1``
sharpens a timid one; the order of the confidences, and so AUROC and PRR, is
unchanged.

The fit reuses :func:`nbest.rerankers.calibrate.fit_temperature`: an answer
with confidence ``p`` is the two-way softmax of ``[logit(p), 0]`` (is right,
is wrong), whose log-loss at temperature ``T`` is that of the scaled
confidence.

>>> t = fit_confidence_temperature([0.9, 0.9, 0.9, 0.9], [True, True, True, False])  # 0.9 claimed, 0.75 right
>>> round(t, 2), round(scale_confidence(0.9, t), 3)
(2.0, 0.75)
>>> scale_confidence(0.9, 1.0)
0.9
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nbest.errors import ConfigError
from nbest.rerankers.calibrate import Example, fit_temperature

__all__ = ["fit_confidence_temperature", "scale_confidence"]

_EPS = 1e-6
"""Confidences are kept inside [eps, 1 - eps]: a unanimous vote (1.0) has finite log-odds."""


def _logit(p: float) -> float:
    p = min(1.0 - _EPS, max(_EPS, p))
    return math.log(p / (1.0 - p))


def scale_confidence(confidence: float, temperature: float) -> float:
    """``sigmoid(logit(confidence) / temperature)``; ``temperature == 1`` returns it unchanged.

    Raises:
        ConfigError: a temperature that is not a positive finite number.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature: must be a positive number (got {temperature!r})", parameter="temperature")
    if temperature == 1.0:
        return confidence
    return 1.0 / (1.0 + math.exp(-_logit(confidence) / temperature))


def fit_confidence_temperature(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """The temperature that minimises the log-loss of the scaled confidences; None when
    there is nothing to fit (no answers, or all right or all wrong: any T > 0 then only
    pushes towards 0 or 1, which says nothing about the next split).

    Raises:
        ConfigError: lists of different lengths or a confidence outside [0, 1].
    """
    if len(confidences) != len(correct):
        raise ConfigError("confidences and correct: must be as long as each other", parameter="correct")
    if any(not 0.0 <= c <= 1.0 for c in confidences):
        raise ConfigError("confidences: must lie in [0, 1]", parameter="confidences")
    if not confidences or all(correct) or not any(correct):
        return None
    examples = [Example([_logit(c), 0.0], {0 if right else 1}) for c, right in zip(confidences, correct, strict=True)]
    return fit_temperature(examples, bounds=(1e-2, 1e2)).temperature
