"""Confidence-aware sampling on the embedded model: accuracy per token, on a split never tuned on.

The set is ``examples/data/reasoning.jsonl`` (200 generated word problems,
``tuning`` / ``heldout`` splits); every arm uses the same sampling settings and
seeds (T = 0.8, top-5 log-probabilities, 80 tokens at most, stop at
``Question:``), one engine (SmolLM2-135M-Instruct, vLLM on CPU):

1. **Tuning split.** One shared generation (N = 16, plus greedy) scored by
   the plain vote, mean log-probability and each weighted vote; one pruned
   generation per candidate policy. Chosen on this split only: the weighted
   vote with the best accuracy at N = 8 (ties: the best mean over N), and the
   policy that saves the most tokens while its weighted vote stays within one
   point of the plain vote at N = 16 (none does: the one that loses least).
   The calibration of each method's confidence is fitted here too.
2. **Held-out split.** The same, with the chosen policy only, and the fitted
   calibration maps applied. The goals read on these rows:

   (a) N = 16: tokens saved by pruning + the weighted vote against plain
       self-consistency (goal >= 40 %), and the accuracy difference (goal:
       within 1 point);
   (b) N = 8: the weighted vote against the plain vote (goal >= +2 points),
       and at every N never below it;
   (c) ECE of the weighted vote's confidence at N = 16 after the calibration
       map fitted on the tuning split (goal <= 0.05), with its 90 % bootstrap
       interval over the prompts. The map's variant (a temperature, Platt
       scaling at N = 16 with several strengths, one Platt map shared by
       N = 4, 8, 16) is chosen by cross-validation within the tuning split.

Prints every row, the figures and ``ratio:`` lines (pruned tokens / plain
tokens at N = 16 last); ``--report PATH`` writes both splits' reports as JSON.

``--samples PATH`` keeps the generated candidates (with their confidence
signals) as JSON lines: the first run writes them, a later run with the same
settings re-scores them without an engine, so a change to the scoring or the
calibration is measured in seconds, not half an hour of generation.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python benchmarks/confidence_methods.py [--limit K] [--report out.json] [--samples s.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import fmean

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest._json import MAX_LINE_BYTES, load_line, numbered_lines
from nbest.cli.options import build_ranker
from nbest.errors import ConfigError
from nbest.evaluation.calibration import ConfidenceMap, apply_calibration, fit_confidence_map, fit_confidence_temperature
from nbest.evaluation.compare import (
    CompareReport,
    Method,
    MethodRow,
    calibrations_of,
    compare_methods,
    comparison_rows,
    pareto_front,
    parse_method,
)
from nbest.evaluation.dataset import EvalItem, Fields, read_dataset
from nbest.evaluation.evaluate import EvalSample, score_samples
from nbest.evaluation.matching import Matcher
from nbest.evaluation.metrics import subsets
from nbest.evaluation.report import EvalReport
from nbest.evaluation.table import print_compare
from nbest.metrics.calibration import Interval, ece_interval, expected_calibration_error
from nbest.rerankers.ranker import Ranker
from nbest.types import Candidate, NbestModel, Request, SamplingParams

DATA = Path(__file__).resolve().parent.parent / "examples" / "data" / "reasoning.jsonl"
N = 16
PARAMS = SamplingParams(temperature=0.8, top_logprobs=5, max_tokens=80, stop=["Question:"], seed=0)
WEIGHTED = ["vote:cisc", "vote:cisc@mean_confidence", "vote:filter@lowest_group", "vote:borda@self_certainty"]
"""Weighted votes tried on the tuning split (CISC on two signals, DeepConf's filter, Borda on self-certainty)."""
SUBSAMPLES = 8
"""Random subsets per prompt and N below 16 (the same for every method)."""
POLICIES = ["low:4:8"]
"""Pruning policies tried on the tuning split (DeepConf-low, 8-token windows: the answers are short). One only,
to keep the run under an hour on two shared cores; add more to let the tuning split choose."""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def rankers_for(texts: list[str]) -> dict[str, Ranker]:
    out = {}
    for text in texts:
        method = parse_method(text)
        if not method.baseline:
            ranker = build_ranker((method.selector,))
            assert ranker is not None
            out[text] = ranker
    return out


def row(report: CompareReport, method: str, n: int) -> MethodRow:
    return next(r for r in report.rows if r.method == method and r.n == n)


# --- saved samples (--samples) ---------------------------------------------------------------------------------

SAMPLES_FORMAT = "nbest-confidence-samples/1"
MAX_SAMPLES_BYTES = 2 * 2**30
"""Largest samples file read (a full run at N = 16 is ~100 MB)."""
MAX_SAMPLE_LINES = 100_000
"""Most lines read: 2 splits x a few generations x 200 prompts is under 2,000."""

Saved = dict[str, tuple[list[EvalSample], float]]
"""One split's generations: by generation key, its samples (in item order) and its engine wall time."""
SPLITS: dict[str, Saved] = {"tuning": {}, "heldout": {}}
"""What this run generated (written to ``--samples`` at the end)."""


class SamplesHeader(NbestModel):
    """The first line of a samples file: what generated them (a run with other settings must not reuse them)."""

    format: str
    dataset: str
    n: int
    limit: int | None
    params: SamplingParams
    generate_s: dict[str, dict[str, float]]
    """By split and generation key: the engine wall time of that generation."""


class SavedSample(NbestModel):
    """One line after the header: one item's candidates of one generation of one split."""

    split: str
    generation: str
    item: EvalItem
    request: Request
    candidates: list[Candidate]
    greedy: Candidate | None = None
    usage_tokens: int | None = None


def _slim(candidate: Candidate) -> Candidate:
    """Without the per-token alternatives once the signals read from them are kept (a tenth of the size)."""
    return candidate if candidate.signals is None else candidate.model_copy(update={"top_logprobs": None})


def write_samples(path: Path, params: SamplingParams, limit: int | None, splits: dict[str, Saved]) -> None:
    """Write every split's generations (atomically: a run cut short leaves no half file to reuse)."""
    header = SamplesHeader(
        format=SAMPLES_FORMAT, dataset=DATA.name, n=N, limit=limit, params=params,
        generate_s={split: {key: seconds for key, (_, seconds) in saved.items()} for split, saved in splits.items()},
    )  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(header.model_dump_json() + "\n")
        for split, saved in splits.items():
            for key, (samples, _) in saved.items():
                for s in samples:
                    line = SavedSample(
                        split=split, generation=key, item=s.item, request=s.request,
                        candidates=[_slim(c) for c in s.candidates],
                        greedy=None if s.greedy is None else _slim(s.greedy), usage_tokens=s.usage_tokens,
                    )  # fmt: skip
                    f.write(line.model_dump_json() + "\n")
    os.replace(tmp, path)


def read_samples(path: Path, params: SamplingParams, limit: int | None) -> dict[str, Saved]:
    """The generations :func:`write_samples` wrote, checked against this run's settings.

    Raises:
        ConfigError: (naming ``samples``) a file over the size or line limits, a bad line (its
            number), or samples made with other settings, data or N.
    """
    size = path.stat().st_size
    if size > MAX_SAMPLES_BYTES:
        raise ConfigError(f"--samples {path}: {size} bytes; at most {MAX_SAMPLES_BYTES}", parameter="samples")
    header: SamplesHeader | None = None
    lines: list[SavedSample] = []
    with path.open("rb") as f:
        for lineno, line in numbered_lines(f):
            if lineno > MAX_SAMPLE_LINES:
                raise ConfigError(f"--samples {path}: more than {MAX_SAMPLE_LINES} lines", parameter="samples")
            try:
                if isinstance(line, int):
                    raise ConfigError(f"a line of {line} bytes; at most {MAX_LINE_BYTES}")
                data = load_line(line.decode("utf-8"))
                if header is None:
                    header = SamplesHeader.parse(data)
                else:
                    lines.append(SavedSample.parse(data))
            except (ConfigError, UnicodeDecodeError) as exc:
                raise ConfigError(f"--samples {path}, line {lineno}: {exc}", parameter="samples") from None
    if header is None or header.format != SAMPLES_FORMAT:
        raise ConfigError(f"--samples {path}: not a samples file ({SAMPLES_FORMAT})", parameter="samples")
    made = (header.dataset, header.n, header.limit, header.params)
    if made != (DATA.name, N, limit, params):
        raise ConfigError(
            f"--samples {path}: made with dataset, N, --limit, sampling = {made}, not this run's "
            f"{(DATA.name, N, limit, params)}; give another path to generate anew", parameter="samples",
        )  # fmt: skip
    out: dict[str, Saved] = {}
    for split, times in header.generate_s.items():
        out[split] = {key: ([], seconds) for key, seconds in times.items()}
    for s in lines:
        if s.generation not in out.get(s.split, {}):
            raise ConfigError(f"--samples {path}: {s.split}/{s.generation} is not in the header", parameter="samples")
        out[s.split][s.generation][0].append(
            EvalSample(item=s.item, request=s.request, candidates=s.candidates, greedy=s.greedy, usage_tokens=s.usage_tokens)
        )
    return out


async def rescore(
    saved: Saved, split: str, methods: list[str], temperatures: dict[str, float | ConfidenceMap] | None, params: SamplingParams
) -> CompareReport:
    """The report :func:`compare_methods` would make, from saved generations (no engine)."""
    parsed = [parse_method(m) for m in methods]
    rankers = rankers_for(methods)
    groups: dict[str, list[Method]] = {}
    for method in parsed:
        groups.setdefault(method.generation, []).append(method)
    reports: dict[str, EvalReport] = {}
    for key, group in groups.items():
        ranking = {m.text: rankers[m.text] for m in group if not m.baseline}
        if key not in saved or not ranking:
            raise ConfigError(f"--samples: no {split} generation {key!r} to score {group[0].text!r} on", parameter="samples")
        samples, seconds = saved[key]
        reports[key] = await score_samples(
            samples, ranking, subsamples=SUBSAMPLES, seed=params.seed or 0, dataset=DATA.name, generate_s=seconds,
            temperatures=temperatures,
        )  # fmt: skip
    rows = [r for method in parsed for r in comparison_rows(method, reports[method.generation])]
    reachable = [r for r in rows if parse_method(r.method).selector != "oracle"]
    for r, on in zip(reachable, pareto_front([(r.tokens, r.accuracy) for r in reachable]), strict=True):
        r.pareto = on
    prompts = len(next(iter(saved.values()))[0])
    warnings = sorted({w for r in reports.values() for w in r.warnings})
    return CompareReport(dataset=DATA.name, split=split, prompts=prompts, n=N, methods=methods, rows=rows,
                         generations=reports, warnings=warnings)  # fmt: skip


async def run_split(
    orch: Orchestrator | None,
    split: str,
    methods: list[str],
    limit: int | None,
    temperatures: dict[str, float | ConfidenceMap] | None,
    params: SamplingParams,
    saved: Saved,
) -> CompareReport:
    """One split's report: generated with ``orch`` (filling ``saved``) or, without one, re-scored from ``saved``."""
    started = time.perf_counter()
    if orch is None:
        report = await rescore(saved, split, methods, temperatures, params)
    else:
        items = read_dataset(DATA, Fields(), split=split, limit=limit)
        order = {item.id: i for i, item in enumerate(items)}
        done: dict[str, list[EvalSample]] = {}
        report = await compare_methods(
            orch, items, [parse_method(m) for m in methods], rankers_for(methods), n=N, params=params,
            subsamples=SUBSAMPLES, concurrency=16, temperatures=temperatures, dataset=DATA.name, split=split,
            on_done=lambda key, sample: done.setdefault(key, []).append(sample),
        )  # fmt: skip
        for key, samples in done.items():
            saved[key] = (sorted(samples, key=lambda s: order[s.item.id]), report.generations[key].generate_s)
    print(f"== {split}: {report.prompts} prompts, {time.perf_counter() - started:.0f} s")
    print_compare(report)
    return report


def choose(tuning: CompareReport) -> tuple[str, str]:
    """The weighted vote and the pruning policy, chosen on the tuning split (see the module docs)."""

    def score(method: str) -> tuple[float, float]:
        at = [r.accuracy or 0.0 for r in tuning.rows if r.method == method]
        return row(tuning, method, 8).accuracy or 0.0, fmean(at)

    weighted = max(WEIGHTED, key=score)
    plain = row(tuning, "vote", N)
    options = []
    for policy in POLICIES:
        pruned = row(tuning, f"{weighted}+prune:{policy}", N)
        loss = (plain.accuracy or 0.0) - (pruned.accuracy or 0.0)
        options.append((loss <= 0.01, -pruned.tokens if loss <= 0.01 else -loss, policy))
    return weighted, max(options)[2]


async def main(
    limit: int | None, params: SamplingParams = PARAMS, splits: dict[str, Saved] | None = None
) -> tuple[CompareReport, CompareReport, str, str]:
    """Both splits' reports, the chosen weighted vote and policy. With ``splits`` (read from
    ``--samples``) no engine starts; without, the generations made are filled into ``SPLITS``."""
    tuning_methods = ["vote", "logprob", *WEIGHTED, "greedy", "oracle"]
    tuning_methods += [f"{m}+prune:{p}" for p in POLICIES for m in ("vote", *WEIGHTED)]
    async with contextlib.AsyncExitStack() as stack:
        orch: Orchestrator | None = None
        if splits is None:
            splits = SPLITS
            orch = await stack.enter_async_context(Orchestrator(VLLMEngine.default(), max_in_flight=64))
        tuning = await run_split(orch, "tuning", tuning_methods, limit, None, params, splits["tuning"])
        weighted, policy = choose(tuning)
        print(f"chosen on the tuning split: {weighted}, --prune {policy}")
        pruned = [f"vote+prune:{policy}", f"{weighted}+prune:{policy}"]
        heldout_methods = ["vote", "logprob", *WEIGHTED, "greedy", "oracle", *pruned]
        heldout_methods += [f"{m}+prune:{policy}" for m in WEIGHTED if m != weighted]  # scored on the same generation
        heldout = await run_split(orch, "heldout", heldout_methods, limit, calibrations_of(tuning), params, splits["heldout"])
    return tuning, heldout, weighted, policy


# --- calibration of the selected answer's confidence (goal c) ------------------------------------------------

CV_FOLDS, CV_REPEATS = 5, 20
"""Cross-validation within the tuning split: prompts in 5 folds, 20 shuffles."""
POOLED = (4, 8, N)
"""The N whose answers a shared map is fitted on (N = 1, 2 hold one or two votes: a share of
1.0 or 0.5 whatever the candidates, a different confidence)."""


@dataclass
class Answers:
    """The selected answers of one method at one N: confidence, right or not, prompt (one per subset)."""

    confidences: list[float]
    correct: list[bool]
    prompts: list[str]

    def only(self, keep: set[str]) -> Answers:
        idx = [i for i, p in enumerate(self.prompts) if p in keep]
        return Answers([self.confidences[i] for i in idx], [self.correct[i] for i in idx], [self.prompts[i] for i in idx])


async def selected(saved: Saved, method: str, k: int, params: SamplingParams) -> Answers:
    """What :func:`score_samples` scores for ``method`` at N = ``k``, answer by answer (the same
    subsets and ranking; its ECE equals the report's, which :func:`calibration_study` checks)."""
    parsed = parse_method(method)
    ranker = rankers_for([method])[method]
    samples, _ = saved[parsed.generation]
    matcher = Matcher()
    out = Answers([], [], [])
    for i, s in enumerate(samples):
        right = {c.index: c.complete and matcher.correct(c.text, s.item.gold or []) for c in s.candidates}
        for sub in subsets(len(s.candidates), min(k, len(s.candidates)), SUBSAMPLES, f"{params.seed or 0}:{i}:{k}"):
            cands = [s.candidates[j] for j in sub]
            best, conf = None, 0.0
            if any(c.complete for c in cands):
                ranked = await ranker.rank(s.request, cands)
                ok = [c for c in ranked.candidates if c.complete]
                if ok:
                    best = ok[0]
                    found = [a.confidence for a in ranked.answers if best.index in a.support]
                    conf = min(1.0, max(0.0, found[0] if found else best.confidence or 0.0))
            out.confidences.append(conf)
            out.correct.append(best is not None and right[best.index])
            out.prompts.append(s.item.id)
    return out


Fitter = Callable[[dict[int, Answers]], "float | ConfidenceMap | None"]


def _pooled(by_n: dict[int, Answers]) -> tuple[list[float], list[bool]]:
    return [c for k in POOLED for c in by_n[k].confidences], [y for k in POOLED for y in by_n[k].correct]


def _platt16(by_n: dict[int, Answers], strength: float) -> ConfidenceMap | None:
    return fit_confidence_map(by_n[N].confidences, by_n[N].correct, strength=strength)


def _toward_pooled(by_n: dict[int, Answers]) -> ConfidenceMap | None:
    shared = fit_confidence_map(*_pooled(by_n))
    return fit_confidence_map(by_n[N].confidences, by_n[N].correct, toward=shared) or shared


VARIANTS: dict[str, Fitter] = {
    "raw": lambda by_n: None,
    "temperature@16": lambda by_n: fit_confidence_temperature(by_n[N].confidences, by_n[N].correct),
    **{f"platt@16 L2={lam:g}": partial(_platt16, strength=lam) for lam in (0.1, 1.0, 3.0, 10.0)},
    "platt shared N=4,8,16": lambda by_n: fit_confidence_map(*_pooled(by_n)),
    "platt@16 toward shared": _toward_pooled,
}
"""How to turn the tuning split's answers into the map applied at N = 16, the variant with the
lowest cross-validated ECE winning (ties: log-loss). ``platt shared N=4,8,16`` is what the reports
carry (``fitted_calibration``, :data:`nbest.evaluation.evaluate.SHARED_FROM`): this study chose it."""


def _apply(fitted: float | ConfidenceMap | None, confidences: list[float]) -> list[float]:
    return confidences if fitted is None else [apply_calibration(c, fitted) for c in confidences]


def cross_validate(tuning: dict[int, Answers], fit: Fitter) -> tuple[float, float]:
    """Mean ECE and log-loss at N = 16 of each variant's out-of-fold answers (all 81 per shuffle)."""
    prompts = sorted(set(tuning[N].prompts))
    eces, losses = [], []
    for repeat in range(CV_REPEATS):
        order = prompts[:]
        random.Random(repeat).shuffle(order)
        confs: list[float] = []
        right: list[bool] = []
        for fold in range(CV_FOLDS):
            test = set(order[fold::CV_FOLDS])
            train = {k: a.only(set(prompts) - test) for k, a in tuning.items()}
            held = tuning[N].only(test)
            confs += _apply(fit(train), held.confidences)
            right += held.correct
        eces.append(expected_calibration_error(confs, right) or 0.0)
        losses.append(fmean(-math.log(min(1 - 1e-6, max(1e-6, c if y else 1 - c))) for c, y in zip(confs, right, strict=True)))
    return fmean(eces), fmean(losses)


def noise_floor(confidences: list[float], seed: int = 0, draws: int = 1000) -> tuple[float, float]:
    """Median and 90th percentile of the ECE a perfectly calibrated confidence with these values
    scores (each answer right with probability its confidence): the figure's floor on this many prompts."""
    rng = random.Random(seed)
    eces = sorted(expected_calibration_error(confidences, [rng.random() < c for c in confidences]) or 0.0 for _ in range(draws))
    return eces[draws // 2], eces[int(0.9 * draws)]


async def calibration_study(
    splits: dict[str, Saved], tuning: CompareReport, heldout: CompareReport, weighted: str, params: SamplingParams
) -> tuple[str, float, Interval | None]:
    """Goal (c): each variant cross-validated on the tuning split, the best (lowest CV ECE) fitted on
    all of tuning and applied to held-out. Returns the variant, its held-out ECE and interval."""
    tune = {k: await selected(splits["tuning"], weighted, k, params) for k in sorted({*POOLED, N})}
    held = await selected(splits["heldout"], weighted, N, params)
    for name, report, answers in (("tuning", tuning, tune[N]), ("heldout", heldout, held)):
        ece = expected_calibration_error(answers.confidences, answers.correct) or 0.0
        assert math.isclose(ece, row(report, weighted, N).ece or 0.0, abs_tol=1e-9), f"{name}: answers differ from the report"
    print(f"\ncalibration of {weighted} at N={N} (variant: tuning {CV_FOLDS}-fold CV x {CV_REPEATS} ECE / log-loss; "
          f"fitted on all of tuning -> held-out ECE [90 % bootstrap]):")  # fmt: skip
    scores = {}
    for name, fit in VARIANTS.items():
        cv_ece, cv_loss = cross_validate(tune, fit)
        fitted = fit(tune)
        out = _apply(fitted, held.confidences)
        ece = expected_calibration_error(out, held.correct) or 0.0
        interval = ece_interval(out, held.correct, groups=held.prompts, seed=params.seed or 0)
        scores[name] = (cv_ece, cv_loss)
        shown = (
            "none"
            if fitted is None
            else f"T={fitted:.2f}"
            if isinstance(fitted, float)
            else f"a={fitted.scale:.2f} b={fitted.bias:+.2f}"
        )
        band = "" if interval is None else f" [{interval.low:.3f}, {interval.high:.3f}]"
        print(f"  {name:<24} CV {cv_ece:.3f} / {cv_loss:.3f}   {shown:<16} held-out {ece:.3f}{band}")
    chosen = min(scores, key=lambda v: scores[v])
    fitted = VARIANTS[chosen](tune)
    out = _apply(fitted, held.confidences)
    ece = expected_calibration_error(out, held.correct) or 0.0
    interval = ece_interval(out, held.correct, groups=held.prompts, seed=params.seed or 0)
    floor = noise_floor(out)
    print(f"chosen on the tuning split: {chosen}; a perfectly calibrated confidence with the held-out values "
          f"scores ECE {floor[0]:.3f} (median; 90th percentile {floor[1]:.3f}) on {len(out)} prompts")  # fmt: skip
    return chosen, ece, interval


def summarize(
    tuning: CompareReport, heldout: CompareReport, weighted: str, policy: str, calibrated: tuple[str, float, Interval | None]
) -> None:
    """Print the goal figures and the ``ratio:`` line."""
    plain16, pruned16 = row(heldout, "vote", N), row(heldout, f"{weighted}+prune:{policy}", N)
    plain8, weighted8 = row(heldout, "vote", 8), row(heldout, weighted, 8)
    saved = 1 - pruned16.tokens / plain16.tokens
    diff16 = 100 * ((pruned16.accuracy or 0) - (plain16.accuracy or 0))
    diff8 = 100 * ((weighted8.accuracy or 0) - (plain8.accuracy or 0))
    below = [r.n for r in heldout.rows if r.method == weighted and (r.accuracy or 0) < (row(heldout, "vote", r.n).accuracy or 0)]
    top = row(heldout, weighted, N)
    ece = "n/a" if top.ece_calibrated is None else f"{top.ece_calibrated:.3f}"
    greedy = row(heldout, "greedy", 1).accuracy or 0.0
    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores · heldout {heldout.prompts} prompts, tuning {tuning.prompts}")
    print(f"greedy: heldout {100 * greedy:.1f} %, tuning {100 * (row(tuning, 'greedy', 1).accuracy or 0):.1f} %")
    print(f"(a) N={N}: plain vote {100 * (plain16.accuracy or 0):.1f} % at {plain16.tokens:.0f} tokens/prompt; "
          f"{weighted}+prune:{policy} {100 * (pruned16.accuracy or 0):.1f} % at {pruned16.tokens:.0f}: "
          f"{100 * saved:.1f} % fewer tokens (goal >= 40 %), accuracy {diff16:+.1f} points (goal >= -1)")  # fmt: skip
    print(f"(b) N=8: {weighted} {100 * (weighted8.accuracy or 0):.1f} % vs vote {100 * (plain8.accuracy or 0):.1f} %: "
          f"{diff8:+.1f} points (goal >= +2); below the plain vote at N = {below or 'none'}")  # fmt: skip
    variant, after, interval = calibrated
    band = "" if interval is None else f", 90 % bootstrap [{interval.low:.3f}, {interval.high:.3f}]"
    raw_band = "" if top.ece_interval is None else f" [{top.ece_interval.low:.3f}, {top.ece_interval.high:.3f}]"
    print(f"(c) ECE of {weighted} at N={N} after the tuning split's {variant}: {after:.3f}{band} "
          f"(raw {top.ece or 0:.3f}{raw_band}; the reports' map: {ece}; goal <= 0.05)")  # fmt: skip
    print(f"ratio: {pruned16.tokens / plain16.tokens:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="Items per split (a quick look).")
    parser.add_argument("--report", type=Path, default=None, help="Write both splits' reports as JSON.")
    parser.add_argument("--temperature", type=float, default=PARAMS.temperature, help="Sampling temperature of every arm.")
    parser.add_argument("--samples", type=Path, default=None,
                        help="Candidates file: written by a run that generates, re-scored when it exists.")  # fmt: skip
    args = parser.parse_args()
    params = PARAMS.model_copy(update={"temperature": args.temperature})
    print(f"sampling: {params.model_dump(exclude_defaults=True)}")
    loaded = None
    if args.samples is not None and args.samples.exists():
        loaded = read_samples(args.samples, params, args.limit)
        print(f"re-scoring the samples in {args.samples} (no engine)")
    tuning, heldout, weighted, policy = anyio.run(main, args.limit, params, loaded, backend="asyncio")
    if args.samples is not None and loaded is None:
        write_samples(args.samples, params, args.limit, SPLITS)
    if args.report is not None:
        both = {"tuning": tuning.model_dump(mode="json"), "heldout": heldout.model_dump(mode="json")}
        args.report.write_text(json.dumps(both) + "\n", encoding="utf-8")
    study = anyio.run(calibration_study, loaded or SPLITS, tuning, heldout, weighted, params, backend="asyncio")
    summarize(tuning, heldout, weighted, policy, study)
