"""Online pruning: stop weak candidates while they generate (DeepConf online, on stock vLLM).

Fu et al. (2025), "Deep Think with Confidence": a few *warm-up* candidates are
generated in full; the lowest group confidence of each (the mean token
confidence over a sliding window of ``window`` tokens, its minimum over the
text: :mod:`nbest.rerankers.confidence`) sets a threshold, the ``1 - keep``
quantile of those values. Every later candidate of the request is watched
token by token, and as soon as its group confidence over a full window falls
below the threshold its engine request is aborted. The pruned candidate stays
in the Result with ``finish_reason="pruned"``, its partial text and its
signals; it does not vote.

``keep`` is the share of warm-up-like candidates expected to survive:
DeepConf-high keeps 0.9 (mild pruning), DeepConf-low keeps 0.1 (aggressive).

The runtime (:class:`PruneRun`, one per request, driven by
:func:`~nbest.orchestrator.fanout.fan_out`): the warm-up candidates are the
first ``warmup`` of the plan; the others wait for them without holding an
in-flight slot. The threshold is the :func:`quantile` (linear interpolation,
numpy's default) of the warm-up values (:func:`warmup_confidence`). Group
confidence needs each token's alternatives, so a request that asks for none is
sent with :data:`PRUNE_TOP_LOGPROBS`. The engines must stream tokens
(:func:`check_prune`); the later candidates are generated with
``tokens=True`` and judged after each update, so that stock vLLM (and any
OpenAI-compatible server that streams log-probabilities) can do what DeepConf
patches vLLM for. Each token costs one :meth:`ConfidenceTracker.update
<nbest.rerankers.confidence.ConfidenceTracker.update>` (O(k)).

>>> parse_prune("0.9")
Prune(keep=0.9, warmup=4, window=16)
>>> parse_prune("low:8")
Prune(keep=0.1, warmup=8, window=16)
>>> parse_prune("0.5:4:32")
Prune(keep=0.5, warmup=4, window=32)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio

from nbest.engines.base import streams_tokens
from nbest.errors import ConfigError
from nbest.orchestrator.stopping import MAX_RULE_CHARS
from nbest.rerankers.confidence import ConfidenceTracker
from nbest.types import Candidate, CandidateSpec

__all__ = [
    "PRESETS",
    "PRUNE_TOP_LOGPROBS",
    "Prune",
    "PruneRun",
    "check_prune",
    "parse_prune",
    "quantile",
    "warmup_confidence",
]

PRESETS = {"high": 0.9, "low": 0.1}
"""DeepConf's two settings by name: the share of candidates kept."""

MAX_WARMUP = 64
MAX_WINDOW = 2048


@dataclass(frozen=True)
class Prune:
    """A pruning policy (see the module docstring).

    Args:
        keep: in (0, 1]: the threshold is the ``1 - keep`` quantile of the
            warm-up candidates' lowest group confidence (1: the lowest of them).
        warmup: candidates generated in full first (the first ``warmup`` of the
            plan, in plan order); at least 1. A request with ``n <= warmup`` is
            not pruned.
        window: tokens per group confidence (a candidate is judged once it has a
            full window).

    Raises:
        ConfigError: a value out of range, naming it.
    """

    keep: float = 0.9
    warmup: int = 4
    window: int = 16

    def __post_init__(self) -> None:
        keep = self.keep
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ConfigError(f"prune.keep: must be a share in (0, 1] (got {keep!r})", parameter="prune.keep", value=keep)
        object.__setattr__(self, "keep", float(keep))
        for name, top in (("warmup", MAX_WARMUP), ("window", MAX_WINDOW)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ConfigError(
                    f"prune.{name}: must be a whole number from 1 to {top} (got {value!r})",
                    parameter=f"prune.{name}",
                    value=value,
                )

    def __str__(self) -> str:
        """The short form :func:`parse_prune` reads back."""
        return f"{self.keep:g}:{self.warmup}:{self.window}"


def parse_prune(text: str, *, name: str = "prune") -> Prune:
    """A pruning policy from its short form ``KEEP[:WARMUP[:WINDOW]]``; ``KEEP`` is a
    share in (0, 1] or ``high`` (0.9) / ``low`` (0.1).

    ``name`` is what an error names: the field ``prune`` (the default: an HTTP body,
    server settings) or the ``--prune`` flag on the command line. Every message starts
    with it, so that a caller reports it as it is.

    >>> parse_prune("2", name="--prune")
    Traceback (most recent call last):
    nbest.errors.ConfigError: --prune '2': prune.keep: must be a share in (0, 1] (got 2.0)

    Raises:
        ConfigError: naming what is wrong and the form allowed (``parameter``: ``name``
            without its dashes, or the policy's field, ``prune.keep`` ...).
    """
    form = "KEEP[:WARMUP[:WINDOW]], e.g. 0.9, low:8 or 0.5:4:32 (KEEP in (0, 1] or high/low)"
    parameter = name.lstrip("-")
    if not isinstance(text, str) or len(text) > MAX_RULE_CHARS:  # the same bound as a stopping rule's
        size = f"{len(text)} characters" if isinstance(text, str) else f"a {type(text).__name__}"
        raise ConfigError(f"{name}: at most {MAX_RULE_CHARS} characters (got {size}); expected {form}", parameter=parameter)
    wrong = ConfigError(f"{name} {text!r}: expected {form}", parameter=parameter, value=text)
    parts = text.strip().lower().split(":")
    if len(parts) > 3 or not parts[0]:
        raise wrong
    try:
        keep = PRESETS[parts[0]] if parts[0] in PRESETS else float(parts[0])
        numbers = [int(part) for part in parts[1:]]
    except ValueError:
        raise wrong from None
    try:
        return Prune(keep, *numbers)
    except ConfigError as exc:  # a value out of range: the policy's own message, after what was given
        raise ConfigError(f"{name} {text!r}: {exc}", parameter=exc.parameter, value=exc.value) from None


PRUNE_TOP_LOGPROBS = 5
"""Alternatives per token asked for when a pruned request asks for none.

Group confidence is computed from each token's top-k alternatives, so pruning
needs ``SamplingParams.top_logprobs >= 1``. A request that asks for 0 is sent
with 5 (and its specs say so: the candidates then carry ``top_logprobs``).
DeepConf reads 20 alternatives; 5 keeps the per-token cost of returning and
decoding them small on a CPU while the token confidence (minus the mean
log-probability of the alternatives) still separates a peaked distribution
from a flat one. A request that asks for k >= 1 keeps its k."""


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation between order
    statistics (numpy's default, "type 7"): sorted ``v_0 <= .. <= v_{m-1}``, position
    ``h = q (m - 1)``, value ``v_floor(h) + (h - floor(h)) (v_floor(h)+1 - v_floor(h))``.
    ``q = 0`` is the smallest value; one value is its own quantile.

    >>> quantile([4.0, 1.0, 3.0, 2.0], 0.1)
    1.3
    >>> quantile([2.5], 0.9)
    2.5

    Raises:
        ValueError: no values, or ``q`` outside [0, 1].
    """
    if not values or not 0.0 <= q <= 1.0:
        raise ValueError("quantile: needs at least one value and q in [0, 1]")
    ordered = sorted(values)
    h = q * (len(ordered) - 1)
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def warmup_confidence(candidate: Candidate, window: int) -> float | None:
    """What a warm-up candidate contributes to the threshold: its lowest group
    confidence over full windows of ``window`` tokens, or, for a text shorter than
    one window, the group confidence of the whole text; None when it failed or has
    no alternatives (``top_logprobs``) to compute it from.

    >>> from nbest.types import CandidateSpec, SamplingParams
    >>> c = Candidate(index=0, spec=CandidateSpec(index=0, params=SamplingParams()), text="ab", num_tokens=2,
    ...               token_logprobs=[-0.1, -0.2], top_logprobs=[{"a": -0.1, "b": -2.1}, {"c": -0.2, "d": -3.8}])
    >>> round(warmup_confidence(c, 16), 6)
    1.55
    """
    if not candidate.ok or candidate.pruned or not candidate.top_logprobs:
        return None
    tracker = ConfidenceTracker(window)
    logprobs = candidate.token_logprobs or []
    for i, alternatives in enumerate(candidate.top_logprobs):
        tracker.update(logprobs[i] if i < len(logprobs) else math.nan, alternatives)
    return tracker.lowest_group if tracker.lowest_group is not None else tracker.group


class PruneRun:
    """One request's pruning state, shared by every wave of that request.

    Built by :meth:`plan` from the request's plan. The first ``warmup`` specs in
    plan order are warm-up candidates: generated in full, each reporting to
    :meth:`warmup_done` when it ends (finished, failed, timed out or cancelled). The
    other specs call :meth:`wait` *before* taking an in-flight slot, so while they
    wait they hold none; once every warm-up candidate has ended, :attr:`threshold`
    is the ``1 - keep`` :func:`quantile` of the warm-up values
    (:func:`warmup_confidence`). A later candidate is then generated with token
    updates and watched by a :class:`~nbest.rerankers.confidence.ConfidenceTracker`
    of ``window`` tokens (:meth:`tracker`); :meth:`prunes` says when to stop it.

    With no usable warm-up candidate (all failed, or none had alternatives) there is
    no threshold: the later candidates run in full and :attr:`warnings` says why.
    """

    def __init__(self, prune: Prune, warmup: Sequence[int]) -> None:
        self.prune = prune
        self._pending = set(warmup)
        self.warmup = frozenset(warmup)
        """Plan indices of the warm-up candidates."""
        self.values: dict[int, float] = {}
        """Each usable warm-up candidate's value (its index -> lowest group confidence)."""
        self.threshold: float | None = None
        """The group confidence below which a later candidate is pruned (None: not yet known, or no pruning)."""
        self.warnings: list[str] = []
        """Why pruning did not happen, when it did not (copied into ``Result.warnings``)."""
        self.pruned: list[int] = []
        """Plan indices of the candidates pruned so far."""
        self._ready = anyio.Event()

    @classmethod
    def plan(cls, prune: Prune | None, specs: Sequence[CandidateSpec]) -> tuple[PruneRun | None, list[CandidateSpec]]:
        """The pruning state for a request's plan ``specs`` and the specs to generate.

        None (and the specs unchanged) without a policy or when the plan has no
        more candidates than warm-up ones (nothing to prune). Otherwise every spec
        asking for no alternatives asks for :data:`PRUNE_TOP_LOGPROBS`.
        """
        if prune is None or len(specs) <= prune.warmup:
            return None, list(specs)
        sent = [
            spec
            if spec.params.top_logprobs >= 1
            else spec.model_copy(update={"params": spec.params.model_copy(update={"top_logprobs": PRUNE_TOP_LOGPROBS})})
            for spec in specs
        ]
        return cls(prune, [spec.index for spec in sent[: prune.warmup]]), sent

    @property
    def ready(self) -> bool:
        """True once every warm-up candidate has ended (the threshold is known, or known to be absent)."""
        return self._ready.is_set()

    async def wait(self) -> None:
        """Return once every warm-up candidate has ended."""
        await self._ready.wait()

    def warmup_done(self, index: int, candidate: Candidate | None) -> None:
        """Warm-up candidate ``index`` ended as ``candidate`` (None: cancelled before it
        finished); the last one to end sets the threshold and releases the waiters."""
        if index not in self._pending:
            return
        self._pending.discard(index)
        if candidate is not None:
            value = warmup_confidence(candidate, self.prune.window)
            if value is not None:
                self.values[index] = value
        if self._pending:
            return
        if self.values:
            self.threshold = quantile(list(self.values.values()), 1.0 - self.prune.keep)
        else:
            self.warnings.append(
                f"prune: no warm-up candidate had token alternatives to set a threshold (of {len(self.warmup)}); "
                "nothing was pruned"
            )
        self._ready.set()

    def tracker(self) -> ConfidenceTracker:
        """A tracker for one later candidate (group window: the policy's ``window``)."""
        return ConfidenceTracker(self.prune.window)

    def prunes(self, tracker: ConfidenceTracker) -> bool:
        """True when the candidate ``tracker`` watches must stop: a full window's group
        confidence fell below the threshold."""
        return self.threshold is not None and tracker.lowest_group is not None and tracker.lowest_group < self.threshold


def check_prune(prune: object, engines: Mapping[str, object] | None = None, specs: Sequence[CandidateSpec] = ()) -> Prune | None:
    """Validate a ``prune=`` argument; with ``engines`` and a plan, check that every
    engine the plan uses can stream tokens.

    Raises:
        ConfigError: ``prune`` is not a :class:`Prune` (or None), or an engine of the
            plan cannot report tokens as they are generated.
    """
    if prune is None:
        return None
    if not isinstance(prune, Prune):
        raise ConfigError(
            f"prune: expected a Prune policy, e.g. Prune(keep=0.9, warmup=4, window=16) or parse_prune('0.9') "
            f"(got {type(prune).__name__})",
            parameter="prune",
        )
    if engines is not None and len(specs) > prune.warmup:
        for route in sorted({spec.engine for spec in specs}):
            engine = engines.get(route)
            if engine is not None and not streams_tokens(engine):
                raise ConfigError(
                    f"prune: route {route!r} (engine {getattr(engine, 'name', '?')!r}, {type(engine).__name__}) cannot "
                    "report tokens as they are generated; "
                    "pruning needs an engine with token updates (VLLMEngine, OpenAIEngine)",
                    parameter="prune",
                    value=route,
                )
    return prune
