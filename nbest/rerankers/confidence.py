"""Confidence signals of one candidate, from its tokens' log-probabilities.

Each generated token ``i`` comes with the log-probability ``l_i`` of the
sampled token and, when asked for (``SamplingParams.top_logprobs = k``), the
log-probabilities ``L_i1 .. L_ik`` of the ``k`` most likely alternatives
(the sampled token among them or added to them). From those:

* ``mean_confidence`` — DeepConf's token confidence (Fu et al., 2025)
  ``C_i = -mean_j L_ij``, averaged over the text. A peaked distribution puts
  little mass on the alternatives, so their log-probabilities are very
  negative and ``C_i`` is large: higher means more confident.
* ``lowest_group`` — the lowest *group confidence*: the mean of ``C_i`` over a
  sliding window of ``window`` tokens, its minimum over every full window (one
  window, the whole text, when the text is shorter than ``window``). A stretch
  where the model hesitated pulls it down even when the rest is confident.
* ``tail`` — the group confidence of the last window (the answer usually sits
  at the end).
* ``bottom10`` — the mean of the lowest 10 % of the group confidences (at
  least one group).
* ``self_certainty`` — Kang et al. (2025): the KL divergence of each token's
  distribution from uniform, averaged over the text. The exact value needs the
  whole vocabulary; here it is **approximated from the top-k alternatives**:
  the ``k`` values are renormalised into a distribution ``q`` over those ``k``
  tokens and the signal is ``KL(U_k || q) = -log k - mean_j log q_j`` (``U_k``
  uniform over the same ``k`` tokens). It is 0 when the alternatives are
  equally likely and grows as one of them dominates; it ignores the mass
  outside the top ``k``, so it is comparable only between candidates generated
  with the same ``k``.
* ``mean_logprob`` — the length-normalised log-probability ``mean_i l_i``
  (CISC's best non-verbal confidence). Needs no alternatives.

Signals that need the alternatives are absent (not zero) when a candidate has
none; a candidate without tokens has no signals.

The window: DeepConf uses 2048 tokens for reasoning traces of thousands of
tokens; a short answer of 10-50 tokens would then be one group, and the
lowest group would equal the mean. :func:`default_window` takes a quarter of
the text (so the text spans at least four window lengths and a local dip
shows), at least 8 tokens (one or two unsure tokens do not make a group) and
at most 2048 (DeepConf's setting for long reasoning).

:class:`ConfidenceTracker` computes the same signals token by token in O(1)
per token (O(k) with ``k`` alternatives), so a caller that streams tokens can
watch the group confidence while the candidate generates.

>>> from nbest.types import Candidate, CandidateSpec, SamplingParams
>>> spec = CandidateSpec(index=0, params=SamplingParams())
>>> c = Candidate(index=0, spec=spec, text="51", num_tokens=2, token_logprobs=[-0.5, -1.0],
...               top_logprobs=[{"5": -0.5, "4": -1.5}, {"1": -1.0, "2": -1.0}])
>>> {k: round(v, 4) for k, v in signals(c).items()}
{'mean_confidence': 1.0, 'lowest_group': 1.0, 'tail': 1.0, 'bottom10': 1.0, 'self_certainty': 0.0601, 'mean_logprob': -0.75}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from nbest.errors import ConfigError
from nbest.types import Candidate

__all__ = ["MAX_WINDOW", "SIGNALS", "ConfidenceTracker", "Signal", "default_window", "signals", "token_confidence"]

Signal = Literal["mean_confidence", "lowest_group", "tail", "bottom10", "self_certainty", "mean_logprob"]
"""The name of a confidence signal (higher is more confident for every one)."""

SIGNALS: tuple[str, ...] = get_args(Signal)
"""Every signal's name, in the order :func:`signals` returns them."""

MAX_WINDOW = 2048
"""The largest default window (DeepConf's group size for long reasoning)."""

MIN_WINDOW = 8
"""The smallest default window."""

BOTTOM_FRACTION = 0.1
"""The share of the lowest group confidences ``bottom10`` averages."""


def default_window(n_tokens: int) -> int:
    """The default group window for a text of ``n_tokens`` tokens:
    ``min(2048, max(8, n_tokens // 4))`` (see the module docstring).

    >>> default_window(20), default_window(400), default_window(100_000)
    (8, 100, 2048)
    """
    return min(MAX_WINDOW, max(MIN_WINDOW, n_tokens // 4))


def _check_window(window: object) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"window: must be a whole number >= 1 (got {window!r})", parameter="window", value=window)
    return window


def token_confidence(alternatives: Mapping[str, float]) -> float | None:
    """DeepConf's confidence of one token: minus the mean log-probability of its alternatives (None: none given).

    >>> token_confidence({"a": -0.1, "b": -3.0, "c": -5.9})
    3.0
    """
    values = [v for v in alternatives.values() if math.isfinite(v)]
    if not values:
        return None
    return -math.fsum(values) / len(values)


def _self_certainty(alternatives: Mapping[str, float]) -> float | None:
    """``KL(U_k || q)`` with ``q`` the top-k alternatives renormalised (None: none given)."""
    values = [v for v in alternatives.values() if math.isfinite(v)]
    if not values:
        return None
    k = len(values)
    top = max(values)
    log_total = top + math.log(math.fsum(math.exp(v - top) for v in values))
    return max(0.0, -math.log(k) - math.fsum(v - log_total for v in values) / k)


class ConfidenceTracker:
    """The confidence signals of one candidate, updated token by token.

    ``update`` costs O(1) per token (O(k) with ``k`` alternatives): a running
    sum over the last ``window`` token confidences gives the current group
    confidence; every full window's value is kept for ``lowest_group`` and
    ``bottom10``.

    Args:
        window: tokens per group (see :func:`default_window`; a streaming
            caller that knows ``max_tokens`` can pass ``default_window(max_tokens)``).

    Raises:
        ConfigError: a window below 1.

    >>> t = ConfidenceTracker(window=2)
    >>> for lp, alt in [(-0.1, {"a": -0.1, "b": -2.1}), (-0.2, {"c": -0.2, "d": -3.8}), (-1.0, {"e": -1.0, "f": -1.0})]:
    ...     t.update(lp, alt)
    >>> round(t.group, 6), round(t.lowest_group, 6)
    (1.5, 1.5)
    >>> round(t.signals()["tail"], 3), round(t.signals()["mean_confidence"], 3)
    (1.5, 1.367)
    """

    def __init__(self, window: int = MAX_WINDOW) -> None:
        self.window = _check_window(window)
        self.tokens = 0
        """Tokens seen."""
        self._logprob_sum = 0.0
        self._logprob_finite = True  # False once a token came without a finite log-probability
        self._conf_tokens = 0  # tokens that had alternatives
        self._conf_sum = 0.0
        self._certainty_sum = 0.0
        self._recent: deque[float] = deque()
        self._recent_sum = 0.0
        self.groups: list[float] = []
        """The group confidence of every full window seen, in order."""
        self.lowest_group: float | None = None
        """The lowest full-window group confidence so far (None until a window is full)."""

    def update(self, logprob: float, top_logprobs: Mapping[str, float] | None = None) -> None:
        """Add one generated token: its log-probability (not finite: ``mean_logprob`` is left
        out) and its alternatives (None: not asked for; non-finite values are skipped)."""
        self.tokens += 1
        if math.isfinite(logprob):
            self._logprob_sum += logprob
        else:
            self._logprob_finite = False
        if not top_logprobs:
            return
        conf = token_confidence(top_logprobs)
        certainty = _self_certainty(top_logprobs)
        if conf is None or certainty is None:
            return
        self._conf_tokens += 1
        self._conf_sum += conf
        self._certainty_sum += certainty
        self._recent.append(conf)
        self._recent_sum += conf
        if len(self._recent) > self.window:
            self._recent_sum -= self._recent.popleft()
        if len(self._recent) == self.window:
            group = self._recent_sum / self.window
            self.groups.append(group)
            if self.lowest_group is None or group < self.lowest_group:
                self.lowest_group = group

    @property
    def group(self) -> float | None:
        """The current group confidence: the mean over the last ``window`` tokens
        (over all tokens while fewer have been seen); None before any token with alternatives."""
        if not self._recent:
            return None
        return self._recent_sum / len(self._recent)

    def signals(self) -> dict[str, float]:
        """The signals so far (see the module docstring); absent when they cannot be computed."""
        out: dict[str, float] = {}
        if self._conf_tokens:
            groups = self.groups or [self._conf_sum / self._conf_tokens]
            lowest = sorted(groups)
            cut = max(1, int(len(lowest) * BOTTOM_FRACTION))
            out["mean_confidence"] = self._conf_sum / self._conf_tokens
            out["lowest_group"] = lowest[0]
            out["tail"] = self.group if self.group is not None else groups[-1]
            out["bottom10"] = math.fsum(lowest[:cut]) / cut
            out["self_certainty"] = self._certainty_sum / self._conf_tokens
        if self.tokens and self._logprob_finite:
            out["mean_logprob"] = self._logprob_sum / self.tokens
        return out


def signals(candidate: Candidate, window: int | None = None) -> dict[str, float]:
    """The confidence signals of a finished ``candidate`` (names in :data:`SIGNALS`).

    ``window`` defaults to :func:`default_window` of its token count. Signals
    that need the alternatives (``top_logprobs``) are absent without them;
    ``mean_logprob`` falls back on ``Candidate.mean_logprob`` without per-token values.

    Raises:
        ConfigError: a window below 1.
    """
    logprobs: Sequence[float] | None = candidate.token_logprobs
    alternatives = candidate.top_logprobs
    n = max(len(logprobs or ()), len(alternatives or ()))
    tracker = ConfidenceTracker(_check_window(window) if window is not None else default_window(n))
    for i in range(n):  # a position without a sampled log-probability leaves mean_logprob to the candidate's own
        lp = logprobs[i] if logprobs is not None and i < len(logprobs) else math.nan
        tracker.update(lp, alternatives[i] if alternatives is not None and i < len(alternatives) else None)
    out = tracker.signals()
    if "mean_logprob" not in out:
        if candidate.mean_logprob is not None and math.isfinite(candidate.mean_logprob):
            out["mean_logprob"] = candidate.mean_logprob
        elif (
            candidate.cumulative_logprob is not None and math.isfinite(candidate.cumulative_logprob) and candidate.num_tokens > 0
        ):
            out["mean_logprob"] = candidate.cumulative_logprob / candidate.num_tokens
    return out
