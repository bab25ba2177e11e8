"""Generate N candidates per prompt once, then measure every reranker at N = 1, 2, 4, ...

Generation (:func:`generate_samples`) and measurement (:func:`score_samples`)
are separate, so metrics can be computed on candidates made earlier (or by
hand, as the tests do). For each N (powers of two below the generated ``n``,
then ``n``) each prompt's candidates are sub-sampled
(:func:`~nbest.evaluation.metrics.subsets`) and every reranker ranks each
subset on its own:

- accuracy tasks: accuracy of the top-ranked candidate, oracle@N (some
  candidate in the subset is right), expected calibration error of the
  confidence of the top candidate's answer (its vote share for ``vote``, the
  summed softmax confidence of the candidates giving it otherwise), and how
  well that confidence tells right from wrong (AUROC, prediction-rejection
  ratio);
- translation tasks: corpus chrF and BLEU of the top-ranked candidates, and of
  the oracle (per prompt, the candidate with the best sentence chrF);
- both: distinct-1/2 and self-BLEU of the subset
  (:mod:`nbest.metrics.diversity`), and the cost: completion tokens of the
  candidates chosen among, and their share of the engine's wall time.

Pruned candidates (``finish_reason="pruned"``, stopped early by a pruning
policy: :mod:`nbest.orchestrator.pruning`) cost their tokens but are never
right: their text is partial and they do not vote. At the full N the tokens
are the engine's own count (``Result.usage``), which also holds the tokens of
candidates a stopping rule cut short.

Calibration: each reranker's top-answer confidence gets the regularised Platt
map and the temperature that would calibrate it on these samples
(``fitted_calibration``, ``fitted_temperature``: to carry to another split; from
N = :data:`SHARED_FROM` on one map fitted on the answers of all those N)
and, given maps or temperatures fitted elsewhere (``temperatures``), the ECE
after applying them (:mod:`nbest.evaluation.calibration`). Every ECE has a 90 %
bootstrap interval over the prompts beside it
(:func:`~nbest.metrics.calibration.ece_interval`).

A single random sample's score is exact: the mean over every candidate
position. Greedy is scored when a greedy candidate was generated.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

from nbest.errors import ConfigError
from nbest.evaluation.calibration import ConfidenceMap, apply_calibration, fit_confidence_map, fit_confidence_temperature
from nbest.evaluation.dataset import EvalItem
from nbest.evaluation.matching import Matcher, matching_warning
from nbest.evaluation.metrics import corpus_bleu, corpus_chrf, sentence_chrf, subsets
from nbest.evaluation.report import DiversityLevel, EvalReport, ItemReport, Level, Quality, RerankerLevel
from nbest.metrics.calibration import (
    MAX_BOOTSTRAP_WORK,
    auroc,
    ece_interval,
    expected_calibration_error,
    prediction_rejection_ratio,
    reliability,
)
from nbest.metrics.diversity import distinct_n, self_bleu
from nbest.orchestrator import Orchestrator
from nbest.orchestrator.pruning import Prune
from nbest.orchestrator.stopping import StoppingRule
from nbest.rerankers.logprob import MeanLogProb
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy, checked_plan
from nbest.strategies.fixed import Fixed
from nbest.types import Candidate, CandidateSpec, Request, Result, SamplingParams

__all__ = [
    "EvalPlan",
    "EvalSample",
    "collect_samples",
    "eval_requests",
    "generate_samples",
    "levels_for",
    "score_samples",
    "temperature_key",
]


@dataclass
class EvalSample:
    """One item with its generated candidates (and greedy candidate)."""

    item: EvalItem
    request: Request
    candidates: list[Candidate]
    greedy: Candidate | None = None
    usage_tokens: int | None = None
    """The engine's count of the samples' completion tokens (``Result.usage``): pruned
    candidates and those a stopping rule cut short included; None when unknown."""


SHARED_FROM = 4
"""The N from which every level's Platt map is one map fitted on the answers of all of them
together (at N = 16 of 16 a prompt gives one answer, at N = 4 and 8 eight subsets each: 17
times the answers for two parameters). Below it each N has its own: a vote of one candidate
always claims 1.0, of two 1.0 or 0.5, confidences of another kind. Chosen by 5-fold
cross-validation on the tuning split of ``examples/data/reasoning.jsonl`` (README, "Performance"),
where the shared map calibrated the weighted vote at N = 16 best."""


def temperature_key(name: str, n: int) -> str:
    """How a fitted temperature is filed: by method (reranker) name and N.

    >>> temperature_key("vote", 8)
    'vote@8'
    """
    return f"{name}@{n}"


def levels_for(n: int) -> list[int]:
    """N = 1, 2, 4, ... below ``n``, then ``n``.

    >>> levels_for(8), levels_for(6), levels_for(1)
    ([1, 2, 4, 8], [1, 2, 4, 6], [1])
    """
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return [*out, n]


_GREEDY = "nbest.eval.greedy"
"""Metadata key marking an item's greedy request (planned with ``Fixed``)."""


@dataclass(frozen=True)
class EvalPlan:
    """Plans an item's samples with ``strategy``, its greedy request (made by
    :func:`eval_requests`) with ``Fixed``."""

    strategy: Strategy

    def plan(self, request: Request) -> list[CandidateSpec]:
        return checked_plan(Fixed() if request.metadata.get(_GREEDY) else self.strategy, request)


def eval_requests(
    items: Sequence[EvalItem], *, n: int, params: SamplingParams, system: str | None = None, greedy: bool = False
) -> list[Request]:
    """The requests :func:`generate_samples` runs, items in order: each item's
    samples (id: the item's id), then its greedy request when ``greedy`` (id
    ``ID-greedy``, planned with ``Fixed`` by :class:`EvalPlan`). Without a
    seed in ``params`` the samples use seed 0, so a run can be repeated.

    Raises:
        ConfigError: a bad ``n`` or prompt.
    """
    if params.seed is None:
        params = params.model_copy(update={"seed": 0})
    greedy_params = params.model_copy(update={"temperature": 0.0})
    requests: list[Request] = []
    for item in items:
        request = Request(id=item.id, prompt=item.prompt, n=n, params=params, system=system, source=item.source)
        requests.append(request)
        if greedy:
            update = {"n": 1, "params": greedy_params, "id": f"{item.id}-greedy", "metadata": {_GREEDY: True}}
            requests.append(request.model_copy(update=update))
    return requests


async def collect_samples(
    finished: AsyncGenerator[tuple[int, Result], None],
    items: Sequence[EvalItem],
    requests: Sequence[Request],
    *,
    greedy: bool = False,
    on_done: Callable[[EvalSample], None] | None = None,
) -> list[EvalSample]:
    """The samples of ``items`` from the Results of their :func:`eval_requests`
    (``finished`` yields ``(position in requests, Result)`` as
    :meth:`Orchestrator.as_completed` does; it is closed on the way out),
    each item's candidates in plan order; ``on_done`` is called as each item
    completes."""
    per_item = 2 if greedy else 1
    samples: list[EvalSample | None] = [None] * len(items)
    parts: dict[int, dict[int, Result]] = {}
    async with contextlib.aclosing(finished):
        async for j, result in finished:
            i, part = divmod(j, per_item)
            got = parts.setdefault(i, {})
            got[part] = result
            if len(got) < per_item:
                continue
            del parts[i]
            sample = EvalSample(
                item=items[i],
                request=requests[i * per_item],
                candidates=sorted(got[0].candidates, key=lambda c: c.index),
                greedy=got[1].candidates[0] if greedy else None,
                usage_tokens=got[0].usage.completion_tokens,
            )
            samples[i] = sample
            if on_done is not None:
                on_done(sample)
    return [s for s in samples if s is not None]


async def generate_samples(
    orch: Orchestrator,
    items: Sequence[EvalItem],
    *,
    n: int,
    params: SamplingParams,
    strategy: Strategy | None = None,
    system: str | None = None,
    greedy: bool = False,
    concurrency: int = 8,
    on_done: Callable[[EvalSample], None] | None = None,
    ranker: Ranker | None = None,
    until: StoppingRule | None = None,
    wave: int | None = None,
    prune: Prune | None = None,
) -> list[EvalSample]:
    """Generate ``n`` candidates per item (plus a greedy one, alongside, when asked).

    The requests run through :meth:`Orchestrator.as_completed`, items in
    order, an item's greedy request beside its samples: at most
    ``concurrency`` requests in progress, twice that with ``greedy`` (the
    samples and the greedy candidate of an item are two). Each item's
    candidates are listed in plan order, ranked by mean log-probability on
    the way (cheap; :func:`score_samples` ranks every subset anew) unless
    ``ranker`` says otherwise. Without a seed in ``params`` the run uses seed
    0, so it can be repeated.

    With a stopping rule (``until``, in waves of ``wave``; see
    :meth:`Orchestrator.run`) an item's candidates stop coming once the rule,
    reading the item ranked by ``ranker``, is satisfied: items may then have
    fewer than ``n`` candidates.

    With a pruning policy (``prune``) the samples' weak candidates are stopped
    while they generate and kept as pruned (the greedy request is never
    pruned: it is one candidate).

    Raises:
        ConfigError: bad settings (before anything is generated).
        EngineDeadError: an engine died.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("concurrency: must be at least 1", parameter="concurrency", value=concurrency)
    requests = eval_requests(items, n=n, params=params, system=system, greedy=greedy)
    for request in requests:
        orch.check(request)
    finished = orch.as_completed(
        requests,
        strategy=EvalPlan(strategy or orch.strategy),
        rerankers=ranker or Ranker([MeanLogProb()]),  # cheap; score_samples ranks every subset again
        concurrency=concurrency * (2 if greedy else 1),
        until=until,
        wave=wave,
        prune=prune,
    )
    return await collect_samples(finished, items, requests, greedy=greedy, on_done=on_done)


def _confidence(ranked_answers: Sequence[object], best: Candidate) -> float:
    for answer in ranked_answers:
        support = getattr(answer, "support", [])
        if best.index in support:
            return float(getattr(answer, "confidence", 0.0))
    return best.confidence or 0.0


async def _top(ranker: Ranker, request: Request, cands: list[Candidate]) -> tuple[Candidate | None, float]:
    if not any(c.complete for c in cands):
        return None, 0.0
    ranked = await ranker.rank(request, cands)
    ok = [c for c in ranked.candidates if c.complete]
    if not ok:
        return None, 0.0
    return ok[0], min(1.0, max(0.0, _confidence(ranked.answers, ok[0])))


def _share(tokens: float, total: int, seconds: float) -> float | None:
    """``seconds`` times the share ``tokens / total``; None when either is unknown (0)."""
    return seconds * tokens / total if seconds > 0 and total > 0 else None


def _task(samples: Sequence[EvalSample]) -> Literal["accuracy", "translation"]:
    if all(s.item.gold is not None for s in samples):
        return "accuracy"
    if all(s.item.reference is not None for s in samples):
        return "translation"
    raise ConfigError("eval: every item needs a gold answer (accuracy) or every item a reference (translation)")


def _text(candidate: Candidate | None) -> str:
    return candidate.text if candidate is not None and candidate.ok else ""


def _best_by_chrf(texts: list[str], reference: str, subset: tuple[int, ...]) -> int:
    return max(subset, key=lambda j: sentence_chrf(texts[j], reference))


def _diversity(texts_per_subset: list[list[str]]) -> DiversityLevel:
    bleus = [b for texts in texts_per_subset if (b := self_bleu(texts)) is not None]
    return DiversityLevel(
        distinct_1=fmean(distinct_n(t, 1) for t in texts_per_subset),
        distinct_2=fmean(distinct_n(t, 2) for t in texts_per_subset),
        self_bleu=fmean(bleus) if bleus else None,
    )


def _translation_quality(hyps_per_draw: list[list[str]], refs: list[str]) -> Quality:
    return Quality(
        chrf=fmean(corpus_chrf(h, refs) for h in hyps_per_draw),
        bleu=fmean(corpus_bleu(h, refs) for h in hyps_per_draw),
    )


async def score_samples(
    samples: Sequence[EvalSample],
    rankers: Mapping[str, Ranker],
    *,
    matcher: Matcher | None = None,
    subsamples: int = 5,
    seed: int = 0,
    bins: int = 10,
    dataset: str | None = None,
    generate_s: float = 0.0,
    temperatures: Mapping[str, float | ConfidenceMap] | None = None,
    resamples: int = 1000,
) -> EvalReport:
    """Measure every ranker at every N on already generated candidates (see the module docs).

    Samples may have different numbers of candidates (generated with a
    stopping rule): at each N, one with fewer candidates than N is scored on
    all of its candidates, as an adaptive run with a budget of N would have
    stopped there.

    Cost: each ranker's ``tokens`` per prompt are those of the candidates it
    chose among (every one listed, failed or stopped ones too); with
    ``generate_s`` (the generation's wall time) its ``engine_s`` is that time's
    share by tokens.

    Calibration: ``temperatures`` (by :func:`temperature_key`, e.g. fitted on a
    tuning split: a temperature or a :class:`ConfidenceMap` each) give each
    ranker's ``ece_calibrated`` at the N they were fitted for; every ranker's
    ``fitted_calibration`` and ``fitted_temperature`` are fitted on these samples.
    The ECE intervals use ``resamples`` bootstrap draws of the prompts (seeded by ``seed``;
    fewer on a set so large that they would exceed
    :data:`~nbest.metrics.calibration.MAX_BOOTSTRAP_WORK`: each interval records its count).

    Raises:
        ConfigError: no samples or rankers, a sample without candidates, missing gold/references,
            ``resamples`` below 1.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"resamples: must be at least 1 (got {resamples!r})", parameter="resamples", value=resamples)
    if not samples:
        raise ConfigError("eval: no samples to score", parameter="samples")
    if not rankers:
        raise ConfigError("eval: give at least one reranker", parameter="rerankers")
    if subsamples < 1:
        raise ConfigError(f"--subsamples: must be at least 1 (got {subsamples})", parameter="subsamples", value=subsamples)
    counts = [len(s.candidates) for s in samples]
    if min(counts) < 1:
        raise ConfigError("eval: every prompt needs at least one candidate", parameter="samples")
    m = max(counts)
    task = _task(samples)
    matcher = matcher or Matcher()
    texts = [[c.text if c.ok else "" for c in s.candidates] for s in samples]
    refs = [s.item.reference or "" for s in samples]
    correct: list[list[bool]] = []
    greedy_tokens = sum(s.greedy.num_tokens for s in samples if s.greedy is not None)
    with_usage = all(s.usage_tokens is not None for s in samples)
    spent = [s.usage_tokens if s.usage_tokens is not None else sum(c.num_tokens for c in s.candidates) for s in samples]
    total_tokens = sum(spent) + greedy_tokens
    position = [{c.index: p for p, c in enumerate(s.candidates)} for s in samples]
    if task == "accuracy":
        correct = [[c.complete and matcher.correct(c.text, s.item.gold or []) for c in s.candidates] for s in samples]

    levels: list[Level] = []
    answers: dict[str, tuple[list[float], list[bool]]] = {}  # by ranker: its answers at every N >= SHARED_FROM
    for k in levels_for(m):
        draws = [subsets(counts[i], min(k, counts[i]), subsamples, f"{seed}:{i}:{k}") for i in range(len(samples))]
        count = max(len(subs) for subs in draws)  # the same for all unless counts differ; then fewer draws repeat
        sub_texts = [[texts[i][j] for j in sub if samples[i].candidates[j].ok] for i, subs in enumerate(draws) for sub in subs]
        diversity = _diversity(sub_texts)
        if k == m and with_usage:  # every candidate: the engine's count, cut-short ones included
            tokens = fmean(spent)
        else:
            tokens = fmean(
                fmean(sum(samples[i].candidates[j].num_tokens for j in sub) for sub in subs) for i, subs in enumerate(draws)
            )
        if task == "accuracy":
            oracle = Quality(
                accuracy=fmean(fmean(any(correct[i][j] for j in sub) for sub in subs) for i, subs in enumerate(draws))
            )
        else:
            picks = [[_best_by_chrf(texts[i], refs[i], sub) for sub in subs] for i, subs in enumerate(draws)]
            oracle = _translation_quality(
                [[texts[i][picks[i][d % len(picks[i])]] for i in range(len(samples))] for d in range(count)], refs
            )
        per_ranker: dict[str, RerankerLevel] = {}
        engine_s = _share(tokens * len(samples), total_tokens, generate_s)
        for name, ranker in rankers.items():
            tops: list[list[tuple[Candidate | None, float]]] = []
            for i, subs in enumerate(draws):
                s = samples[i]
                tops.append([await _top(ranker, s.request, [s.candidates[j] for j in sub]) for sub in subs])
            if task == "accuracy":
                hits = [
                    [best is not None and correct[i][position[i][best.index]] for best, _ in row] for i, row in enumerate(tops)
                ]
                confs = [conf for row in tops for _, conf in row]
                flat = [h for row in hits for h in row]
                prompt_of = [i for i, row in enumerate(tops) for _ in row]  # a prompt's subsets are resampled together
                boot = min(resamples, MAX_BOOTSTRAP_WORK // len(confs))  # bounded; each interval says how many it drew
                if k >= SHARED_FROM:
                    pooled = answers.setdefault(name, ([], []))
                    pooled[0].extend(confs)
                    pooled[1].extend(flat)
                given = (temperatures or {}).get(temperature_key(name, k))
                calibrated = None if given is None else [apply_calibration(c, given) for c in confs]
                per_ranker[name] = RerankerLevel(
                    quality=Quality(accuracy=fmean(fmean(row) for row in hits)),
                    ece=expected_calibration_error(confs, flat, bins),
                    ece_interval=ece_interval(confs, flat, bins=bins, groups=prompt_of, resamples=boot, seed=seed),
                    fitted_temperature=fit_confidence_temperature(confs, flat),
                    fitted_calibration=fit_confidence_map(confs, flat) if k < SHARED_FROM else None,  # else: below
                    applied_temperature=given if not isinstance(given, ConfidenceMap) else None,
                    applied_calibration=given if isinstance(given, ConfidenceMap) else None,
                    ece_calibrated=None if calibrated is None else expected_calibration_error(calibrated, flat, bins),
                    ece_calibrated_interval=None
                    if calibrated is None
                    else ece_interval(calibrated, flat, bins=bins, groups=prompt_of, resamples=boot, seed=seed),
                    reliability=reliability(confs, flat, bins),
                    auroc=auroc(confs, flat),
                    prr=prediction_rejection_ratio(confs, flat),
                    tokens=tokens,
                    engine_s=engine_s,
                )
            else:
                hyps = [[_text(tops[i][d % len(tops[i])][0]) for i in range(len(samples))] for d in range(count)]
                per_ranker[name] = RerankerLevel(quality=_translation_quality(hyps, refs), tokens=tokens, engine_s=engine_s)
        levels.append(Level(n=k, subsets=count, oracle=oracle, diversity=diversity, rerankers=per_ranker))
    for name, (confs, flat) in answers.items():  # one shape for every N >= SHARED_FROM, fitted on all their answers
        shared = fit_confidence_map(confs, flat)
        for level in levels:
            if level.n >= SHARED_FROM:
                level.rerankers[name].fitted_calibration = shared

    with_greedy = all(s.greedy is not None for s in samples)
    greedy_texts = [s.greedy.text if s.greedy is not None and s.greedy.ok else "" for s in samples]
    if task == "accuracy":
        random_q = Quality(accuracy=fmean(fmean(row) for row in correct))
        greedy_hits = [
            s.greedy is not None and s.greedy.ok and matcher.correct(s.greedy.text, s.item.gold or []) for s in samples
        ]
        greedy_q = Quality(accuracy=fmean(greedy_hits)) if with_greedy else None
    else:
        random_q = _translation_quality([[texts[i][j % counts[i]] for i in range(len(samples))] for j in range(m)], refs)
        greedy_q = _translation_quality([greedy_texts], refs) if with_greedy else None
        greedy_hits = []

    warning = None
    if task == "accuracy":
        all_texts = [[*texts[i], *([greedy_texts[i]] if with_greedy else [])] for i in range(len(samples))]
        verdicts = [[*correct[i], *([greedy_hits[i]] if with_greedy else [])] for i in range(len(samples))]
        warning = matching_warning(matcher.mode, all_texts, [s.item.gold or [] for s in samples], verdicts)
    items = [
        ItemReport(
            id=s.item.id,
            gold=s.item.gold,
            reference=s.item.reference,
            answers=[matcher.answer(t) for t in texts[i]] if task == "accuracy" and matcher.mode != "contains" else [],
            correct=correct[i] if task == "accuracy" else [],
            greedy_text=s.greedy.text if s.greedy is not None else None,
            greedy_correct=greedy_hits[i] if with_greedy and task == "accuracy" else None,
            failed=sum(not c.ok for c in s.candidates),
        )
        for i, s in enumerate(samples)
    ]
    return EvalReport(
        dataset=dataset,
        task=task,
        prompts=len(samples),
        n=m,
        match=matcher.mode if task == "accuracy" else None,
        extract=matcher.extract_name if task == "accuracy" and matcher.mode != "contains" else None,
        subsamples=subsamples,
        seed=seed,
        random=random_q,
        greedy=greedy_q,
        levels=levels,
        items=items,
        completion_tokens=total_tokens,
        generate_s=generate_s,
        greedy_tokens=greedy_tokens / len(samples) if with_greedy else None,
        warnings=[warning] if warning is not None else [],
    )
