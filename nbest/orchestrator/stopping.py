"""Adaptive early stopping: stop sampling once the answer is clear.

``orch.generate(prompt, n=32, until=stopping.Beta(0.95), wave=4)`` samples
the strategy's plan in waves of ``wave`` candidates, ranks after each wave,
and asks the stopping rule whether to go on (see
:mod:`nbest.orchestrator.adaptive`). A rule reads the Result ranked so far
and returns a :class:`Decision`.

Rules (Aggarwal et al., 2023, "Let's Sample Step by Step: Adaptive-Consistency
for Efficient Reasoning and Coding with LLMs"):

* :class:`Beta` — with ``a`` votes for the leading answer and ``b`` for the
  runner-up, the posterior of the leading answer's share among the two,
  ``p ~ Beta(a + 1, b + 1)`` (uniform prior), gives ``P(p > 1/2)``: the
  probability that the leader really is the majority. For whole vote counts
  this is exactly ``P(Binomial(a + b + 1, 1/2) <= a)``. Stop when it reaches
  the threshold. Four unanimous votes give 31/32 = 0.969.
* :class:`Dirichlet` — the same over every answer seen: with counts
  ``c_1 >= c_2 >= ... >= c_k``, shares ``p ~ Dirichlet(c + 1)`` and
  ``P(p_1 > p_j for every j > 1)``, computed as a one-dimensional integral
  over independent Gamma variables. With two answers it equals :class:`Beta`.
* :class:`Confidence` — for any ranker: stop when the top answer's
  confidence (``on="answer"``, the default) or the best candidate's
  (``on="candidate"``) reaches the threshold.
* :class:`ESC` — Early-Stopping Self-Consistency (Li et al., 2024, "Escape
  Sky-high Cost: Early-stopping Self-Consistency for Multi-step Reasoning"):
  the plan is cut into windows of ``window`` consecutive candidates (plan
  order); stop as soon as every candidate of one window gives the same
  answer. Its waves are its windows (``wave`` defaults to ``window`` where
  the caller asks the rule, see :attr:`ESC.wave`); with another wave size a
  window is judged once all of its candidates are in.

Votes are the sizes of ``Result.answers`` (candidates grouped by the answer a
vote reranker extracted, and clustered by meaning when free-form, else by
near-duplicate or normalised text); failed candidates vote for nothing. With
one answer seen, the runner-up has 0 votes.

Weighted votes (``Beta(0.95, weighted=True)``, ``--until beta:0.95:weighted``;
unweighted is the default): with a confidence-weighted vote (``vote:cisc``,
``vote:prob`` ...) an answer's ``confidence`` is its weighted support, and
the rule counts each answer as ``confidence / (sum of the answers'
confidences) * n`` votes, ``n`` the number of candidates that voted
(:func:`weighted_counts`). The counts keep their total, so the posterior
stays as sharp as ``n`` votes allow (weighting redistributes the evidence;
it does not invent more); they are fractional, and the posterior takes them
as they are (``Beta(a + 1, b + 1)`` with real ``a``, ``b``). With uniform
votes the weighted counts are the plain counts.

>>> Beta(0.95).probability([4])
0.96875
>>> Beta(0.95).probability([3, 1])
0.8125
>>> parse_rule("dirichlet:0.9")
Dirichlet(threshold=0.9)
>>> parse_rule("esc:5")
ESC(window=5)
>>> parse_rule("beta:0.95:weighted")
Beta(threshold=0.95, weighted=True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

from nbest.errors import ConfigError
from nbest.types import Result

__all__ = [
    "ESC",
    "MAX_RULE_CHARS",
    "Beta",
    "Confidence",
    "Decision",
    "Dirichlet",
    "StoppingRule",
    "beta_probability",
    "check_stop_strings",
    "dirichlet_probability",
    "is_rule_text",
    "parse_rule",
    "vote_counts",
    "weighted_counts",
]


@dataclass(frozen=True)
class Decision:
    """What a stopping rule concluded after a wave."""

    stop: bool
    """True: enough samples, stop generating."""
    probability: float | None
    """The number compared with the threshold (None: nothing to judge yet)."""
    answer: str | None
    """The leading answer (None when there is none)."""


@runtime_checkable
class StoppingRule(Protocol):
    """Decides from the Result ranked so far whether to stop sampling."""

    threshold: float

    def check(self, result: Result) -> Decision: ...


def check_stop_strings(stop: object) -> None:
    """Reject a stopping rule given as ``stop``: ``stop`` takes stop strings,
    a stopping rule goes in ``until``.

    Raises:
        ConfigError: ``stop`` is a stopping rule.
    """
    if isinstance(stop, StoppingRule):
        raise ConfigError(
            f"stop: takes stop strings; {stop!r} is a stopping rule: pass it as until= (with wave=)",
            parameter="stop",
            value=stop,
        )


def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ConfigError(
            f"threshold: must be a probability in (0, 1) (got {threshold!r})", parameter="threshold", value=threshold
        )
    return float(threshold)


def vote_counts(result: Result) -> list[int]:
    """Votes per answer of ``result``, largest first (the sizes of ``result.answers``)."""
    return sorted((len(a.support) for a in result.answers), reverse=True)


def weighted_counts(result: Result) -> list[float]:
    """Weighted votes per answer of ``result``, largest first: each answer's share of the
    answers' confidences times the number of candidates that voted (see the module docstring).

    >>> from nbest.types import Answer, Result
    >>> answers = [Answer(answer="a", confidence=0.7, support=[0, 3]), Answer(answer="b", confidence=0.3, support=[1, 2, 4])]
    >>> result = Result(id="r", prompt="q", n=5, candidates=[], best=None, answers=answers)
    >>> [round(c, 9) for c in weighted_counts(result)]
    [3.5, 1.5]
    """
    voters = sum(len(a.support) for a in result.answers)
    total = math.fsum(max(0.0, a.confidence) for a in result.answers)
    if voters == 0:
        return []
    if total <= 0:  # no weight anywhere: the plain counts
        return [float(c) for c in vote_counts(result)]
    return sorted((max(0.0, a.confidence) / total * voters for a in result.answers), reverse=True)


def beta_probability(a: float, b: float) -> float:
    """``P(p > 1/2)`` for ``p ~ Beta(a + 1, b + 1)``: the leader (``a`` votes) beats the runner-up (``b``).

    Exact for whole counts: ``sum_{k <= a} C(a + b + 1, k) / 2^(a + b + 1)``;
    fractional (weighted) counts use the regularised incomplete beta function.

    >>> beta_probability(2, 1), beta_probability(3, 3)
    (0.6875, 0.5)
    >>> round(beta_probability(1.5, 0.5), 6)  # 1/2 + 2/(3 pi)
    0.712207

    Raises:
        ConfigError: a negative or non-finite count.
    """
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise ConfigError(f"votes: counts must be finite and >= 0 (got {a}, {b})", parameter="votes", value=(a, b))
    if float(a).is_integer() and float(b).is_integer():
        trials = int(a) + int(b) + 1
        return float(Fraction(sum(math.comb(trials, k) for k in range(int(a) + 1)), 2**trials))
    from scipy import special  # type: ignore[import-untyped]

    return min(1.0, max(0.0, 1.0 - float(special.betainc(a + 1.0, b + 1.0, 0.5))))


def dirichlet_probability(counts: Sequence[float]) -> float:
    """``P(p_1 > p_j for all j > 1)`` for ``p ~ Dirichlet(counts + 1)``; ``counts[0]`` is the leader.

    With ``G_i ~ Gamma(counts[i] + 1)`` independent, ``p = G / sum(G)``, so the
    probability is ``∫ pdf_1(x) · prod_{j>1} cdf_j(x) dx``, integrated
    numerically (absolute error below 1e-9); counts may be fractional
    (weighted votes). One count is paired with an unseen answer (count 0), as
    in :func:`beta_probability`.

    >>> round(dirichlet_probability([1, 0, 0]), 6)  # 11/18
    0.611111
    >>> round(dirichlet_probability([0, 0, 0, 0]), 6)  # symmetric: 1/4
    0.25

    Raises:
        ConfigError: no counts, or a negative one.
    """
    if not counts:
        raise ConfigError("votes: need at least one count", parameter="votes")
    if any(not math.isfinite(c) or c < 0 for c in counts):
        raise ConfigError(f"votes: counts must be finite and >= 0 (got {list(counts)})", parameter="votes", value=list(counts))
    counts = list(counts) if len(counts) > 1 else [counts[0], 0]
    from scipy import integrate, stats

    lead = counts[0] + 1.0
    others = [c + 1.0 for c in counts[1:]]
    top = max(lead, *others)
    upper = top + 40.0 * math.sqrt(top) + 60.0  # Gamma(top) has no mass left beyond this

    def integrand(x: float) -> float:
        value = float(stats.gamma.pdf(x, lead))
        for alpha in others:
            value *= float(stats.gamma.cdf(x, alpha))
        return value

    value, _ = integrate.quad(integrand, 0.0, upper, points=[lead], limit=200, epsabs=1e-11, epsrel=1e-10)
    return min(1.0, max(0.0, float(value)))


class Beta:
    """Stop when ``P(leader is the majority of the two leading answers)`` reaches ``threshold``.

    With ``weighted=True`` the votes are the answers' weighted support
    (:func:`weighted_counts`) rather than their sizes.

    Raises:
        ConfigError: a threshold outside (0, 1); ``weighted`` not a bool.
    """

    def __init__(self, threshold: float = 0.95, *, weighted: bool = False) -> None:
        self.threshold = _check_threshold(threshold)
        if not isinstance(weighted, bool):
            raise ConfigError(f"weighted: must be True or False (got {weighted!r})", parameter="weighted", value=weighted)
        self.weighted = weighted

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold:g}{', weighted=True' if self.weighted else ''})"

    def probability(self, counts: Sequence[float]) -> float:
        """The stopping probability for vote counts sorted largest first."""
        if not counts:
            return 0.0
        return beta_probability(counts[0], counts[1] if len(counts) > 1 else 0)

    def check(self, result: Result) -> Decision:
        counts: Sequence[float] = weighted_counts(result) if self.weighted else vote_counts(result)
        if not counts:
            return Decision(stop=False, probability=None, answer=None)
        p = self.probability(counts)
        return Decision(stop=p >= self.threshold, probability=p, answer=result.answers[0].answer)


class Dirichlet(Beta):
    """Stop when ``P(leader has the largest share among all answers seen)`` reaches ``threshold``.

    Raises:
        ConfigError: a threshold outside (0, 1); ``weighted`` not a bool.
    """

    def probability(self, counts: Sequence[float]) -> float:
        if not counts:
            return 0.0
        return dirichlet_probability(counts)


class Confidence:
    """Stop when the top answer's (or the best candidate's) confidence reaches ``threshold``.

    Works with any ranker; what the confidence means depends on it (see
    :mod:`nbest.rerankers.calibrate`): with a vote reranker an answer's
    confidence is its vote share.

    Raises:
        ConfigError: a threshold outside (0, 1), ``on`` not answer/candidate.
    """

    def __init__(self, threshold: float = 0.8, *, on: Literal["answer", "candidate"] = "answer") -> None:
        if on not in ("answer", "candidate"):
            raise ConfigError(f"on: use answer or candidate (got {on!r})", parameter="on", value=on)
        self.threshold = _check_threshold(threshold)
        self.on: Literal["answer", "candidate"] = on

    def __repr__(self) -> str:
        return f"Confidence(threshold={self.threshold:g}, on={self.on!r})"

    def check(self, result: Result) -> Decision:
        if self.on == "answer":
            if not result.answers:
                return Decision(stop=False, probability=None, answer=None)
            top = result.answers[0]
            return Decision(stop=top.confidence >= self.threshold, probability=top.confidence, answer=top.answer)
        best = result.best
        if best is None or best.confidence is None:
            return Decision(stop=False, probability=None, answer=None)
        return Decision(stop=best.confidence >= self.threshold, probability=best.confidence, answer=best.text)


MAX_WINDOW = 64
"""The largest ESC window (the default cap on ``n``)."""


class ESC:
    """Stop as soon as one whole window of ``window`` consecutive candidates agrees on one answer.

    Windows follow plan order: candidates ``0 .. W-1``, ``W .. 2W-1``, ... A
    window is judged once all of its candidates are in the Result; a failed
    candidate or one without an answer breaks its window's agreement. The
    reported probability is the largest share one answer has in the latest
    complete window (1.0: unanimous). A window of 1 stops after the first
    answer (greedy-like).

    The rule's wave size is its window (:attr:`wave`): run it with ``wave=window``
    (the default where the caller reads :attr:`wave`) so that each wave is one window.

    Raises:
        ConfigError: a window that is not a whole number in 1..64.

    >>> rule = ESC(3)
    >>> rule.window_shares([["a", "a", "b"], ["c", "c", "c"]])
    [0.6666666666666666, 1.0]
    """

    threshold: float = 1.0
    """A window stops sampling when one answer holds this share of it: all of it."""

    def __init__(self, window: int = 5) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
            raise ConfigError(
                f"window: must be a whole number from 1 to {MAX_WINDOW} (got {window!r})", parameter="window", value=window
            )
        self.window = window
        self.wave = window
        """The wave size this rule is meant to run with: one window per wave."""

    def __repr__(self) -> str:
        return f"ESC(window={self.window})"

    @staticmethod
    def window_shares(windows: Sequence[Sequence[str | None]]) -> list[float]:
        """For each window's answers (None: no answer), the largest share one answer has."""
        shares = []
        for answers in windows:
            counts: dict[str, int] = {}
            for a in answers:
                if a is not None:
                    counts[a] = counts.get(a, 0) + 1
            shares.append(max(counts.values(), default=0) / len(answers) if answers else 0.0)
        return shares

    def check(self, result: Result) -> Decision:
        by_index: dict[int, str | None] = {c.index: None for c in result.candidates}
        for answer in result.answers:
            for index in answer.support:
                if index in by_index:
                    by_index[index] = answer.answer
        windows: list[list[str | None]] = []
        start = 0
        while all(i in by_index for i in range(start, start + self.window)):
            windows.append([by_index[i] for i in range(start, start + self.window)])
            start += self.window
        leader = result.answers[0].answer if result.answers else None
        if not windows:
            return Decision(stop=False, probability=None, answer=leader)
        shares = self.window_shares(windows)
        for answers, share in zip(windows, shares, strict=True):
            if share >= self.threshold and answers[0] is not None:
                return Decision(stop=True, probability=1.0, answer=leader)
        return Decision(stop=False, probability=shares[-1], answer=leader)


_RULES: dict[str, type[Beta] | type[Confidence] | type[ESC]] = {
    "beta": Beta,
    "dirichlet": Dirichlet,
    "confidence": Confidence,
    "esc": ESC,
}
_RULE_TEXT = re.compile(r"^\s*(beta|dirichlet|confidence|esc)\s*:", re.IGNORECASE)


def is_rule_text(text: str) -> bool:
    """True when ``text`` names a stopping rule (``beta:``, ``dirichlet:``, ``confidence:``, ``esc:`` ...)."""
    return _RULE_TEXT.match(text) is not None


MAX_RULE_CHARS = 64
"""Longest rule short form accepted (the longest meaningful one, ``dirichlet:0.999:weighted``, has 24)."""


def parse_rule(text: str, *, name: str = "--until") -> StoppingRule:
    """Parse the short form ``beta:P[:weighted]``, ``dirichlet:P[:weighted]``,
    ``confidence:P[:answer|candidate]``, ``esc:W``.

    ``name`` is what an error names: the ``--until`` flag on the command line (the
    default), the field ``until`` of an HTTP body or a settings object. Every message
    starts with it, so that a caller reports it as it is, whatever surface it serves.

    >>> parse_rule("confidence:0.8:candidate")
    Confidence(threshold=0.8, on='candidate')
    >>> parse_rule("gamma:0.9", name="until")
    Traceback (most recent call last):
    nbest.errors.ConfigError: until 'gamma:0.9': unknown stopping rule 'gamma'; use beta:P, dirichlet:P, confidence:P or esc:W

    Raises:
        ConfigError: an unknown rule, a missing or bad threshold, a text over
            :data:`MAX_RULE_CHARS` (``parameter`` is ``name`` without its dashes).
    """
    parameter = name.lstrip("-")
    if not isinstance(text, str) or len(text) > MAX_RULE_CHARS:  # checked before it is parsed or echoed back
        size = f"{len(text)} characters" if isinstance(text, str) else f"a {type(text).__name__}"
        raise ConfigError(f"{name}: at most {MAX_RULE_CHARS} characters for a stopping rule (got {size})", parameter=parameter)
    head = f"{name} {text!r}"

    def error(reason: str) -> ConfigError:
        return ConfigError(f"{head}: {reason}", parameter=parameter, value=text)

    rule, _, rest = text.strip().partition(":")
    kind = _RULES.get(rule.strip().lower())
    if kind is None:
        raise error(f"unknown stopping rule {rule!r}; use beta:P, dirichlet:P, confidence:P or esc:W")
    number, _, on = rest.partition(":")
    if kind is ESC:
        if on or not re.fullmatch(r"\s*[0-9]{1,3}\s*", number) or not 1 <= int(number) <= MAX_WINDOW:
            raise error(f"esc takes a window size, a whole number from 1 to {MAX_WINDOW}, e.g. esc:5")
        return ESC(int(number))
    try:
        threshold = float(number)
    except ValueError:
        raise error(f"the threshold must be a number in (0, 1), e.g. {rule}:0.95") from None
    if kind is Confidence:
        if on and on not in ("answer", "candidate"):
            raise error("after the threshold use answer or candidate")
    elif on and on.strip().lower() != "weighted":
        raise error(f"{rule} takes a threshold, then optionally :weighted")
    try:
        if kind is Confidence:
            return Confidence(threshold, on="candidate" if on == "candidate" else "answer")
        weighted = bool(on)
        return Dirichlet(threshold, weighted=weighted) if kind is Dirichlet else Beta(threshold, weighted=weighted)
    except ConfigError as exc:  # the threshold out of range: the rule's own message, after what was given
        raise error(str(exc)) from None
