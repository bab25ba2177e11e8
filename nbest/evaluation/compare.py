"""Comparing selection methods on accuracy *per token* (``nbest eval --compare``).

A method is a way to turn a prompt into one answer, written as a selector and
optional generation changes joined by ``+``::

    vote                      plain majority vote (self-consistency)
    vote:cisc                 confidence-weighted vote (any reranker short form or JSON config)
    greedy | oracle | random  the greedy candidate, oracle@N, one random sample
    vote:cisc+prune:0.1:4:16  weighted vote over candidates generated with online pruning
    vote+until:beta:0.95      majority vote, sampling stopped by a rule

Methods that only *select* share one generation: every candidate of the plan is
generated once (with a greedy one beside it when ``greedy`` is compared), and
each method is measured at N = 1, 2, 4, ... on the same sub-samples. Methods
that change *what is generated* (``+prune:``, ``+until:``) get a generation of
their own, with the same seeds, one per distinct change (``vote+prune:low`` and
``vote:cisc+prune:low`` share theirs); they are measured at the full N only,
because a sub-sample of a pruned run is not what a pruned run of that size
would have generated.

Each row reports accuracy, the tokens per prompt the method cost (pruned
candidates' tokens included: the engine's count, ``Result.usage``), the engine
time they took, and how good the confidence of the selected answer is: ECE
(raw, and after a map fitted on another split with ``--calibration``; each with
its bootstrap interval),
AUROC and PRR. :func:`pareto_front` marks the rows no other row beats on both
accuracy and tokens (oracle rows aside: no method can reach them).

>>> m = parse_method("vote:cisc+prune:low:4")
>>> m.selector, str(m.prune), m.generation
('vote:cisc', '0.1:4:16', 'prune:0.1:4:16')
>>> parse_method("oracle").generation
'shared'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from nbest.errors import ConfigError
from nbest.evaluation.calibration import ConfidenceMap
from nbest.evaluation.dataset import EvalItem
from nbest.evaluation.evaluate import EvalSample, generate_samples, score_samples, temperature_key
from nbest.evaluation.matching import Matcher
from nbest.evaluation.report import EvalReport, Quality
from nbest.metrics.calibration import Interval
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.pruning import Prune, parse_prune
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import NbestModel, SamplingParams

__all__ = [
    "BASELINES",
    "MAX_METHODS",
    "CompareReport",
    "Method",
    "MethodRow",
    "calibrations_of",
    "check_methods",
    "compare_methods",
    "comparison_rows",
    "pareto_front",
    "parse_method",
    "temperatures_of",
]

BASELINES = ("greedy", "oracle", "random")
"""Selectors that are not rerankers."""
MAX_METHODS = 32
MAX_METHOD_CHARS = 400
SHARED = "shared"
"""The generation key of methods that only select."""


@dataclass(frozen=True)
class Method:
    """One compared method: what selects (a reranker short form or a baseline) and what
    changes the generation (a pruning policy, a stopping rule)."""

    text: str
    """As written: the row's name."""
    selector: str
    prune: Prune | None = None
    until: str | None = None
    """A stopping rule's short form (``beta:0.95``)."""

    @property
    def baseline(self) -> bool:
        return self.selector in BASELINES

    @property
    def generation(self) -> str:
        """Methods with the same key are measured on the same candidates."""
        parts = [f"prune:{self.prune}"] if self.prune is not None else []
        parts += [f"until:{self.until}"] if self.until is not None else []
        return "+".join(parts) or SHARED


def parse_method(text: str) -> Method:
    """A method from ``SELECTOR[+prune:POLICY][+until:RULE]`` (see the module docs).

    The selector is checked here only for being present; a reranker short form is
    built (and refused) by the caller, as ``--reranker`` is.

    Raises:
        ConfigError: an empty or overlong method, an unknown ``+`` part, a part given
            twice, a bad policy, or ``greedy`` with a generation change.
    """
    form = "SELECTOR[+prune:POLICY][+until:RULE], e.g. vote:cisc+prune:0.1:4:16"
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_METHOD_CHARS:
        shown = text if not isinstance(text, str) or len(text) <= 40 else text[:40] + "..."
        raise ConfigError(f"--compare: expected {form} of at most {MAX_METHOD_CHARS} characters (got {shown!r})",
                          parameter="compare", value=shown)  # fmt: skip
    text = text.strip()
    selector, *changes = text.split("+")
    if selector.lstrip().startswith("{"):  # a JSON config may hold '+': only trailing parts that name a change split off
        selector, changes = text, []
        for marker in ("+prune:", "+until:"):
            head, found, tail = selector.rpartition(marker)
            if found and "}" not in tail:
                selector, changes = head, [marker[1:] + tail, *changes]
    prune: Prune | None = None
    until: str | None = None
    for change in changes:
        kind, _, arg = change.strip().partition(":")
        if kind == "prune" and prune is None and arg:
            try:
                prune = parse_prune(arg)
            except ConfigError as exc:
                raise ConfigError(f"--compare {text!r}: {exc}", parameter="compare", value=text) from None
        elif kind == "until" and until is None and arg:
            until = arg.strip()
        else:
            raise ConfigError(f"--compare {text!r}: {change!r} is not a change; expected {form}",
                              parameter="compare", value=text)  # fmt: skip
    selector = selector.strip()
    if not selector:
        raise ConfigError(f"--compare {text!r}: no selector; expected {form}", parameter="compare", value=text)
    if selector == "greedy" and (prune is not None or until is not None):
        raise ConfigError(f"--compare {text!r}: greedy is one candidate; nothing to prune or stop",
                          parameter="compare", value=text)  # fmt: skip
    return Method(text=text, selector=selector, prune=prune, until=until)


class MethodRow(NbestModel):
    """One method at one N."""

    method: str
    n: int
    """Candidates per prompt it chose among (1 for greedy)."""
    generation: str
    """``shared``, or the generation change it was measured on (``prune:0.1:4:16``)."""
    accuracy: float | None = None
    tokens: float = 0.0
    """Completion tokens per prompt: of the candidates chosen among (pruned ones included)."""
    engine_s: float | None = None
    """Engine wall time those tokens took (their share of their generation's time)."""
    ece: float | None = None
    ece_interval: Interval | None = None
    """90 % bootstrap interval of ``ece`` over the prompts."""
    ece_calibrated: float | None = None
    """ECE after the map (or temperature) fitted elsewhere (``--calibration``)."""
    ece_calibrated_interval: Interval | None = None
    """90 % bootstrap interval of ``ece_calibrated`` over the prompts."""
    fitted_temperature: float | None = None
    """The temperature that calibrates this row's confidence on these prompts (older reports hold only this)."""
    fitted_calibration: ConfidenceMap | None = None
    """The regularised Platt map that calibrates it (what ``--calibration`` carries when present)."""
    auroc: float | None = None
    prr: float | None = None
    pareto: bool = False
    """No other row is at least as accurate for at most as many tokens (and better on one)."""


class CompareReport(NbestModel):
    """Every method's rows, and the evaluation report of each generation behind them."""

    dataset: str | None = None
    split: str | None = None
    prompts: int
    n: int
    methods: list[str]
    rows: list[MethodRow]
    generations: dict[str, EvalReport] = Field(default_factory=dict)
    """By generation key: the full report (levels, items) each row was read from."""
    warnings: list[str] = Field(default_factory=list)


def pareto_front(points: Sequence[tuple[float, float | None]]) -> list[bool]:
    """For ``(tokens, accuracy)`` points: which no other point dominates (as accurate or
    more for as few tokens or fewer, strictly better on one). No accuracy: never on it.

    >>> pareto_front([(10, 0.5), (20, 0.7), (20, 0.6), (30, 0.7), (5, None)])
    [True, True, False, False, False]
    """
    front = []
    for i, (t, a) in enumerate(points):
        if a is None:
            front.append(False)
            continue
        dominated = any(b is not None and u <= t and b >= a and (u < t or b > a) for j, (u, b) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def comparison_rows(method: Method, report: EvalReport) -> list[MethodRow]:
    """``method``'s rows read from the report of its generation."""
    levels = report.levels if method.generation == SHARED else [lv for lv in report.levels if lv.n == report.n]
    if method.selector == "greedy":
        if report.greedy is None:
            return []
        tokens = report.greedy_tokens or 0.0
        share = report.generate_s * tokens * report.prompts / report.completion_tokens if report.completion_tokens else 0
        return [MethodRow(method=method.text, n=1, generation=method.generation, accuracy=report.greedy.accuracy,
                          tokens=tokens, engine_s=share or None)]  # fmt: skip
    rows = []
    for level in levels:
        cost = next(iter(level.rerankers.values()), None)
        if method.selector in ("oracle", "random"):
            quality: Quality = level.oracle if method.selector == "oracle" else report.random
            if method.selector == "random" and level.n != 1:
                continue  # one random sample: its accuracy is the same at every N, its cost that of N = 1
            rows.append(MethodRow(method=method.text, n=level.n, generation=method.generation, accuracy=quality.accuracy,
                                  tokens=cost.tokens if cost else 0.0, engine_s=cost.engine_s if cost else None))  # fmt: skip
            continue
        result = level.rerankers[method.text]
        rows.append(
            MethodRow(
                method=method.text, n=level.n, generation=method.generation, accuracy=result.quality.accuracy,
                tokens=result.tokens, engine_s=result.engine_s, ece=result.ece, ece_calibrated=result.ece_calibrated,
                fitted_temperature=result.fitted_temperature, auroc=result.auroc, prr=result.prr,
                ece_interval=result.ece_interval, ece_calibrated_interval=result.ece_calibrated_interval,
                fitted_calibration=result.fitted_calibration,
            )
        )  # fmt: skip
    return rows


def temperatures_of(report: CompareReport | EvalReport) -> dict[str, float]:
    """The fitted temperatures a report holds, by :func:`temperature_key`."""
    if isinstance(report, CompareReport):
        return {temperature_key(row.method, row.n): row.fitted_temperature for row in report.rows if row.fitted_temperature}
    return {
        temperature_key(name, level.n): result.fitted_temperature
        for level in report.levels
        for name, result in level.rerankers.items()
        if result.fitted_temperature
    }


def calibrations_of(report: CompareReport | EvalReport) -> dict[str, float | ConfidenceMap]:
    """What ``--calibration`` applies from a report, by :func:`temperature_key`: each
    method's fitted Platt map, or its fitted temperature where the report holds no map
    (one written before maps were fitted)."""
    if isinstance(report, CompareReport):
        fitted = [(row.method, row.n, row.fitted_calibration, row.fitted_temperature) for row in report.rows]
    else:
        fitted = [
            (name, level.n, result.fitted_calibration, result.fitted_temperature)
            for level in report.levels
            for name, result in level.rerankers.items()
        ]
    out: dict[str, float | ConfidenceMap] = {}
    for name, n, mapping, temperature in fitted:
        if mapping is not None:
            out[temperature_key(name, n)] = mapping
        elif temperature:
            out[temperature_key(name, n)] = temperature
    return out


def check_methods(methods: Sequence[Method]) -> None:
    """At least one method, at most :data:`MAX_METHODS`, no two with the same text.

    Raises:
        ConfigError: naming ``compare`` and what is wrong.
    """
    if not methods:
        raise ConfigError("--compare: give at least one method", parameter="compare")
    if len(methods) > MAX_METHODS:
        raise ConfigError(f"--compare: at most {MAX_METHODS} methods (got {len(methods)})", parameter="compare")
    names = [m.text for m in methods]
    if len(set(names)) != len(names):
        twice = next(x for x in names if names.count(x) > 1)
        raise ConfigError(f"--compare: {twice!r} is given twice", parameter="compare", value=twice)


async def compare_methods(
    orch: Orchestrator,
    items: Sequence[EvalItem],
    methods: Sequence[Method],
    rankers: Mapping[str, Ranker],
    *,
    n: int,
    params: SamplingParams,
    strategy: Strategy | None = None,
    system: str | None = None,
    matcher: Matcher | None = None,
    subsamples: int = 5,
    concurrency: int = 8,
    wave: int | None = None,
    until_rules: Mapping[str, object] | None = None,
    temperatures: Mapping[str, float | ConfidenceMap] | None = None,
    dataset: str | None = None,
    split: str | None = None,
    on_done: Callable[[str, EvalSample], None] | None = None,
) -> CompareReport:
    """Generate once per distinct generation, measure every method on its generation.

    ``rankers`` holds a Ranker for every method that is not a baseline, by the
    method's text; ``until_rules`` the built stopping rule of every ``until``
    short form the methods use. Every generation uses ``params`` (its seed, 0
    when unset): the candidate at position i has the same seed in all of them.
    ``on_done(generation, sample)`` is called as each item of a generation completes.

    Raises:
        ConfigError: no methods, too many, two with the same name, a missing ranker
            or rule (before anything is generated).
        EngineDeadError: an engine died.
    """
    check_methods(methods)
    for method in methods:
        if not method.baseline and method.text not in rankers:
            raise ConfigError(f"--compare {method.text!r}: no ranker built for it", parameter="compare", value=method.text)
        if method.until is not None and method.until not in (until_rules or {}):
            raise ConfigError(f"--compare {method.text!r}: no rule built for {method.until!r}", parameter="until")
    groups: dict[str, list[Method]] = {}
    for method in methods:
        groups.setdefault(method.generation, []).append(method)
    if params.seed is None:
        params = params.model_copy(update={"seed": 0})

    oracles = {m.text for m in methods if m.selector == "oracle"}
    reports: dict[str, EvalReport] = {}
    for key, group in groups.items():
        first = group[0]
        ranking = {m.text: rankers[m.text] for m in group if not m.baseline}
        reader = next(iter(ranking.values()), None)  # what a stopping rule reads: the group's first ranker
        started = time.perf_counter()
        samples = await generate_samples(
            orch, items, n=n, params=params, strategy=strategy, system=system,
            greedy=key == SHARED and any(m.selector == "greedy" for m in group), concurrency=concurrency,
            on_done=None if on_done is None else (lambda sample, key=key: on_done(key, sample)),  # type: ignore[misc]
            ranker=reader if first.until is not None else None,
            until=(until_rules or {}).get(first.until) if first.until is not None else None,  # type: ignore[arg-type]
            wave=wave if first.until is not None else None, prune=first.prune,
        )  # fmt: skip
        generate_s = time.perf_counter() - started
        reports[key] = await score_samples(
            samples, ranking or _cost_only(), matcher=matcher, subsamples=subsamples,
            seed=params.seed or 0, dataset=dataset, generate_s=generate_s, temperatures=temperatures,
        )  # fmt: skip
    rows = [row for method in methods for row in comparison_rows(method, reports[method.generation])]
    reachable = [r for r in rows if r.method not in oracles]  # oracle@N is a ceiling, not a method one can run
    for row, on in zip(reachable, pareto_front([(r.tokens, r.accuracy) for r in reachable]), strict=True):
        row.pareto = on
    warnings = sorted({w for r in reports.values() for w in r.warnings})
    return CompareReport(dataset=dataset, split=split, prompts=len(items), n=n, methods=[m.text for m in methods], rows=rows,
                         generations=reports, warnings=warnings)  # fmt: skip


def _cost_only() -> dict[str, Ranker]:
    """A generation compared only through baselines (oracle, random, greedy) is still
    scored through one ranker, so its levels carry their token costs."""
    from nbest.rerankers.logprob import MeanLogProb

    return {"mean_logprob": Ranker([MeanLogProb()])}
