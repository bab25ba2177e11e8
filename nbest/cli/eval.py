"""``nbest eval DATASET.jsonl``: is best-of-N worth it, with which reranker, at what N?

::

    $ nbest eval examples/data/arithmetic.jsonl --answer-field answer -n 8 --greedy \\
          --reranker logprob --reranker vote:number --report report.json --plots plots/

Generates N candidates per prompt once, then prints, per N = 1, 2, 4, ... and
per reranker, the accuracy (or chrF/BLEU with ``--reference-field``) of the
top-ranked candidate, oracle@N, the calibration error, AUROC and PRR of its
confidence, the tokens and engine time it cost, and diversity; see
:mod:`nbest.evaluation.evaluate`. The sampling, strategy and reranker options
are those of ``nbest run``. Everything is validated before the engine starts,
the paths of ``--report`` and ``--plots`` included (their folders must exist).

``--compare M1 --compare M2 ...`` measures methods on accuracy per token (see
:mod:`nbest.evaluation.compare`): ``vote``, ``vote:cisc``, ``greedy``,
``oracle``, ``vote:cisc+prune:0.1:4:16`` ...; those that only select share one
generation, those that prune or stop get their own with the same seeds.
``--split tuning`` / ``--split heldout`` evaluates one split of a set;
``--calibration TUNING_REPORT.json`` applies the calibration maps fitted on
another run (the tuning split; a report holding only temperatures, from an
older version, gives its temperatures) to this one's confidences and reports
the ECE after them. ``--prune POLICY`` prunes every prompt's candidates (as ``nbest
run --prune``); pruned candidates cost their tokens and never count as right.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nbest.cli.options import (
    build_engines,
    build_prune,
    build_ranker,
    build_replica_spec,
    build_request,
    build_strategy,
    build_until,
    check_wave,
    engine_options,
    quiet_vllm,
    ray_options,
    sampling_options,
    stdout_to_stderr,
    until_options,
)
from nbest.cli.paths import check_folder, check_writable
from nbest.errors import ConfigError, NbestError

if TYPE_CHECKING:
    from nbest.distributed import RayOptions
    from nbest.engines.base import Engine
    from nbest.evaluation.calibration import ConfidenceMap
    from nbest.evaluation.compare import CompareReport, Method
    from nbest.evaluation.dataset import EvalItem
    from nbest.evaluation.matching import Matcher
    from nbest.evaluation.report import EvalReport
    from nbest.strategies.base import Strategy
    from nbest.types import Request

MAX_CALIBRATION_BYTES = 256 * 1024 * 1024

__all__ = ["eval_command"]


@click.command("eval")
@click.argument("dataset", metavar="DATASET.jsonl", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--answer-field", default=None, help="Field holding the gold answer (accuracy tasks).")
@click.option("--reference-field", default=None, help="Field holding the reference translation (translation tasks).")
@click.option("--prompt-field", default="prompt", show_default=True, help="Field holding the prompt (text or chat messages).")
@click.option("--source-field", default=None, help="Field holding the source text (Request.source, e.g. for --reranker source).")
@click.option("--id-field", default="id", show_default=True, help="Field holding the item's id (default: its line number).")
@click.option("--match", "match_mode", type=click.Choice(["auto", "exact", "contains"]), default="auto", show_default=True,
              help="auto: exact on a boxed answer or a number, the gold phrase in the text otherwise; exact: normalised "
                   "extracted answer equals gold; contains: gold phrase appears in the text.")  # fmt: skip
@click.option(
    "--extract", default="auto", show_default=True, help="Answer extractor for --match auto/exact (number, boxed, choice, ...)."
)
@sampling_options
@until_options
@click.option("--greedy", is_flag=True, help="Also generate one greedy candidate per prompt (the greedy baseline).")
@click.option("--subsamples", type=int, default=5, show_default=True, help="Most subsets of N candidates averaged per prompt.")
@click.option("--limit", type=int, default=None, help="Use only the first LIMIT items (of the split, with --split).")
@click.option("--split", "split", default=None, metavar="NAME",
              help="Evaluate only the items whose 'split' field is NAME (e.g. tuning, heldout).")  # fmt: skip
@click.option("--compare", "compare_texts", multiple=True, metavar="METHOD",
              help="Compare methods on accuracy per token (repeat): a reranker short form, greedy, oracle or "
                   "random, with +prune:POLICY or +until:RULE to change what is generated (vote:cisc+prune:0.1).")  # fmt: skip
@click.option("--calibration", "calibration_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A report (--report) of another run, e.g. on the tuning split: apply its fitted calibration "
                   "maps (or temperatures, in older reports) and report the ECE after them.")  # fmt: skip
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the full report as JSON.")  # fmt: skip
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write PNG plots into this folder.")  # fmt: skip
@engine_options(compile_auto=True)
@click.option("--concurrency", type=int, default=8, show_default=True, help="Prompts in progress at once (per replica, --ray).")
@ray_options
def eval_command(
    dataset: Path,
    answer_field: str | None,
    reference_field: str | None,
    prompt_field: str,
    source_field: str | None,
    id_field: str,
    match_mode: str,
    extract: str,
    n: int,
    system: str | None,
    strategy_text: str | None,
    reranker_texts: tuple[str, ...],
    until: tuple[str, ...],
    prune: str | None,
    wave: int | None,
    greedy: bool,
    subsamples: int,
    limit: int | None,
    split: str | None,
    compare_texts: tuple[str, ...],
    calibration_path: Path | None,
    report_path: Path | None,
    plots_dir: Path | None,
    model: str | None,
    endpoints: tuple[str, ...],
    engines_file: str | None,
    concurrency: int,
    ray: RayOptions | None,
    **sampling: Any,
) -> None:
    """Evaluate best-of-N on DATASET.jsonl: every reranker at N = 1, 2, 4, ... up to -n.

    With --until RULE each prompt's candidates stop coming once the rule, reading
    them ranked by the rerankers, is satisfied; a prompt with fewer than N
    candidates is scored on all of them at N.

    With --ray the candidates are generated on replicas on a Ray cluster (as
    for nbest batch --ray), with the same seeds: the report is the same.

    With --compare METHOD (repeated) each method gets its rows at every N: its
    accuracy, the tokens it cost per prompt (pruned ones included), engine time
    and confidence quality; a PNG of accuracy against tokens with the Pareto
    front goes into --plots.
    """
    import anyio
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nbest import rerankers
    from nbest.batch.progress import StatusColumn
    from nbest.evaluation.dataset import Fields, read_dataset
    from nbest.evaluation.evaluate import EvalSample, collect_samples, eval_requests, generate_samples, score_samples
    from nbest.evaluation.matching import Matcher
    from nbest.evaluation.plots import write_plots
    from nbest.evaluation.table import print_report
    from nbest.orchestrator import Orchestrator

    # everything is validated before the engine starts (the output paths too: not after an hour of generation)
    if report_path is not None:
        check_writable(report_path, "--report")
    if plots_dir is not None:
        check_folder(plots_dir, "--plots")
    if answer_field is None and reference_field is None:
        raise ConfigError("eval: give --answer-field (accuracy) or --reference-field (translation)", parameter="answer_field")
    if answer_field is not None and reference_field is not None:
        raise ConfigError("eval: give --answer-field or --reference-field, not both", parameter="answer_field")
    if subsamples < 1:
        raise ConfigError(f"--subsamples: must be at least 1 (got {subsamples})", parameter="subsamples", value=subsamples)
    if concurrency < 1:
        raise ConfigError(f"--concurrency: must be at least 1 (got {concurrency})", parameter="concurrency", value=concurrency)
    methods = _methods(compare_texts, reranker_texts=reranker_texts, until=until, prune=prune, ray=ray is not None,
                       translation=reference_field is not None, greedy=greedy)  # fmt: skip
    if methods:  # the rules are the methods' own (+until:RULE); _compare checks --wave against them
        rule, policy = None, None
    else:
        rule, wave = build_until(until, wave)
        policy = build_prune(prune)
    temperatures = _calibrations(calibration_path) if calibration_path is not None else None
    base = build_request("(per item)", n, system, **sampling)
    strategy = build_strategy(strategy_text)
    matcher = Matcher(match_mode, extract)  # type: ignore[arg-type]  # click.Choice checked it
    fields = Fields(prompt=prompt_field, answer=answer_field, reference=reference_field, source=source_field, id=id_field)
    items = read_dataset(dataset, fields, limit=limit, split=split)
    engines = build_engines(model, endpoints, engines_file)
    if methods:
        return _compare(
            dataset, split, items, methods, engines, base, strategy, matcher, subsamples, concurrency, wave, temperatures,
            report_path, plots_dir,
        )  # fmt: skip
    if policy is not None:  # an engine that cannot stream tokens is refused before it loads its model
        from nbest.orchestrator.pruning import check_prune

        probe = Orchestrator(engines, close_engines=False)
        check_prune(policy, engines, probe.plan(base, strategy)[1])
    default_specs = ("logprob", f"vote:{extract}") if answer_field is not None else ("logprob", "mbr:chrf")
    # a judge asks the default route
    combined = build_ranker(reranker_texts or default_specs, engine=next(iter(engines.values())))
    assert combined is not None
    rankers = {r.name: rerankers.Ranker([r]) for r in combined.rerankers}
    if len(combined.rerankers) > 1:
        rankers["combined"] = combined
    console = Console(stderr=True)
    spec = None
    if ray is not None:
        from nbest.distributed import ReplicaPool

        spec = build_replica_spec(
            model, endpoints, engines_file, strategy=strategy, ranker=combined if rule is not None else None,
            max_in_flight=max(64, n), concurrency=concurrency * (2 if greedy else 1), eval_plan=True,
            until=until[0] if until else None, wave=wave, prune=prune,
        )  # fmt: skip
        if rule is None:
            spec = spec.model_copy(update={"rerankers": ["logprob"]})  # as generate_samples ranks on the way
        requests = eval_requests(items, n=base.n, params=base.params, system=base.system, greedy=greedy)
        ReplicaPool(spec, ray).check(requests)  # as a replica will: before any starts

    async def main_ray() -> tuple[list[EvalSample], float]:
        from nbest.distributed import ReplicaPool

        assert spec is not None and ray is not None

        def say(message: str) -> None:
            console.print(f"nbest eval: {message}", highlight=False, markup=False)

        say(f"starting {ray.replicas} replica(s) on the Ray cluster")
        started = anyio.current_time()
        async with ReplicaPool(spec, ray, say=say) as pool:
            say(f"{pool.status()} in {anyio.current_time() - started:.1f} s")
            with Progress(
                TextColumn("[bold]nbest eval"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                TimeRemainingColumn(), StatusColumn(pool.status), console=console,
            ) as progress:  # fmt: skip
                task = progress.add_task("eval", total=len(items))
                started = anyio.current_time()
                samples = await collect_samples(
                    pool.as_completed(requests), items, requests, greedy=greedy, on_done=lambda _: progress.advance(task)
                )
                return samples, anyio.current_time() - started

    async def main() -> tuple[list[EvalSample], float]:
        async with Orchestrator(engines, max_in_flight=max(64, n)) as orch:
            with Progress(
                TextColumn("[bold]nbest eval"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                TimeRemainingColumn(), console=console,
            ) as progress:  # fmt: skip
                task = progress.add_task("eval", total=len(items))
                started = anyio.current_time()
                samples = await generate_samples(
                    orch, items, n=base.n, params=base.params, strategy=strategy, system=base.system, greedy=greedy,
                    concurrency=concurrency, on_done=lambda _: progress.advance(task),
                    ranker=combined if rule is not None else None, until=rule, wave=wave,  # what --until reads
                    prune=policy,
                )  # fmt: skip
                return samples, anyio.current_time() - started

    quiet_vllm()
    if ray is not None:
        from nbest.distributed import ray_cluster

        with ray_cluster(ray.address, verbose=ray.verbose), stdout_to_stderr():
            samples, generate_s = anyio.run(main_ray, backend="asyncio")
    else:
        with stdout_to_stderr():
            samples, generate_s = anyio.run(main, backend="asyncio")
    if rule is not None and samples:
        used = sum(len(s.candidates) for s in samples) / len(samples)
        click.echo(f"nbest eval: --until {until[0]}: {used:.1f} of {base.n} candidates per prompt on average", err=True)
    if policy is not None and samples:
        pruned = sum(c.pruned for s in samples for c in s.candidates) / len(samples)
        click.echo(f"nbest eval: --prune {policy}: {pruned:.1f} of {base.n} candidates per prompt pruned on average", err=True)
    seed = base.params.seed if base.params.seed is not None else 0
    report = anyio.run(
        lambda: score_samples(
            samples,
            rankers,
            matcher=matcher,
            subsamples=subsamples,
            seed=seed,
            dataset=dataset.name,
            generate_s=generate_s,
            temperatures=temperatures,
        )
    )
    print_report(report)
    for warning in report.warnings:
        console.print(f"nbest eval: warning: {warning}", style="bold red", highlight=False, markup=False)
    _write_report(report, report_path)
    if plots_dir is not None:
        for path in write_plots(report, plots_dir):
            click.echo(f"nbest eval: plot written to {path}", err=True)


def _write_report(report: EvalReport | CompareReport, report_path: Path | None) -> None:
    if report_path is None:
        return
    try:
        report_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # the folder was checked first: a full disk, or it went away
        raise NbestError(f"--report: cannot write {report_path} ({exc.strerror or exc})") from None
    click.echo(f"nbest eval: report written to {report_path} (its fitted calibration: --calibration)", err=True)


def _methods(
    texts: tuple[str, ...], *, reranker_texts: tuple[str, ...], until: tuple[str, ...], prune: str | None, ray: bool,
    translation: bool, greedy: bool,
) -> list[Method]:  # fmt: skip
    """The --compare methods, checked against the options they replace."""
    from nbest.evaluation.compare import MAX_METHODS, check_methods, parse_method

    if not texts:
        return []
    clashes = [
        (reranker_texts, "--reranker: with --compare the methods name their rerankers (--compare vote:cisc)"),
        (until, "--until: with --compare put the rule in a method (--compare vote+until:beta:0.95)"),
        (prune, "--prune: with --compare put the policy in a method (--compare vote+prune:0.9)"),
        (ray, "--ray: --compare runs on local engines"),
        (greedy, "--greedy: with --compare the greedy baseline is a method (--compare greedy)"),
        (translation, "--compare: accuracy tasks only (--answer-field)"),
    ]
    for given, message in clashes:
        if given:
            raise ConfigError(message, parameter="compare")
    if len(texts) > MAX_METHODS:  # before parsing any of them
        raise ConfigError(f"--compare: at most {MAX_METHODS} methods (got {len(texts)})", parameter="compare")
    methods = [parse_method(text) for text in texts]
    check_methods(methods)
    return methods


def _calibrations(path: Path) -> dict[str, float | ConfidenceMap]:
    """The fitted maps of a report written by --report (an eval or a --compare one), by
    method and N; the fitted temperatures where it holds no map (an older report)."""
    from pydantic import ValidationError

    from nbest.evaluation.compare import CompareReport, calibrations_of
    from nbest.evaluation.report import EvalReport

    try:
        if path.stat().st_size > MAX_CALIBRATION_BYTES:
            raise ConfigError(f"--calibration: {path} is over {MAX_CALIBRATION_BYTES >> 20} MB; not a report",
                              parameter="calibration", value=str(path))  # fmt: skip
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--calibration: no such file: {path}", parameter="calibration", value=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:80]
        raise ConfigError(f"--calibration: cannot read {path} ({why})", parameter="calibration", value=str(path)) from None
    for kind in (CompareReport, EvalReport):
        try:
            report: CompareReport | EvalReport = kind.model_validate_json(text)
        except ValidationError:
            continue
        found = calibrations_of(report)
        if not found:
            raise ConfigError(f"--calibration: {path} holds no fitted calibration (every answer right, or every one wrong)",
                              parameter="calibration", value=str(path))  # fmt: skip
        return found
    raise ConfigError(f"--calibration: {path} is not a report written by nbest eval --report",
                      parameter="calibration", value=str(path))  # fmt: skip


def _compare(
    dataset: Path, split: str | None, items: list[EvalItem], methods: list[Method], engines: dict[str, Engine],
    base: Request, strategy: Strategy | None, matcher: Matcher, subsamples: int, concurrency: int, wave: int | None,
    temperatures: dict[str, float | ConfidenceMap] | None, report_path: Path | None, plots_dir: Path | None,
) -> None:  # fmt: skip
    """--compare: build every method's ranker and rule (before the engines start), run, print, write."""
    import anyio
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nbest.evaluation.compare import SHARED, compare_methods
    from nbest.evaluation.plots import write_compare_plot, write_plots
    from nbest.evaluation.table import print_compare
    from nbest.orchestrator import Orchestrator, stopping
    from nbest.orchestrator.pruning import check_prune

    judge_engine = next(iter(engines.values()))
    rankers = {}
    for method in methods:
        if not method.baseline:
            try:
                built = build_ranker((method.selector,), engine=judge_engine)
            except ConfigError as exc:
                why = str(exc).removeprefix("--reranker: ")
                raise ConfigError(f"--compare {method.text!r}: {why}", parameter="compare", value=method.text) from None
            assert built is not None
            rankers[method.text] = built
    rules: dict[str, object] = {}
    for method in methods:
        if method.until is not None and method.until not in rules:
            try:
                rule = stopping.parse_rule(method.until, name="until")  # the method's own part, +until:RULE
            except ConfigError as exc:
                raise ConfigError(f"--compare {method.text!r}: {exc}", parameter="compare", value=method.text) from None
            rules[method.until] = rule
    if wave is not None:
        check_wave(wave)
        if not rules:
            raise ConfigError("--wave: only used with a stopping rule (--compare vote+until:beta:0.95)", parameter="wave")
    probe = Orchestrator(engines, close_engines=False)
    specs = probe.plan(base, strategy)[1]
    for method in methods:
        if method.prune is not None:
            check_prune(method.prune, engines, specs)
    generations = list(dict.fromkeys(m.generation for m in methods))
    console = Console(stderr=True)

    async def main() -> CompareReport:
        async with Orchestrator(engines, max_in_flight=max(64, base.n)) as orch:
            with Progress(
                TextColumn("[bold]nbest eval {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                TimeRemainingColumn(), console=console,
            ) as progress:  # fmt: skip
                tasks = {key: progress.add_task(key, total=len(items)) for key in generations}
                return await compare_methods(
                    orch, items, methods, rankers, n=base.n, params=base.params, strategy=strategy, system=base.system,
                    matcher=matcher, subsamples=subsamples, concurrency=concurrency, wave=wave, until_rules=rules,
                    temperatures=temperatures, dataset=dataset.name, split=split,
                    on_done=lambda key, _: progress.advance(tasks[key]),
                )  # fmt: skip

    quiet_vllm()
    with stdout_to_stderr():
        report = anyio.run(main, backend="asyncio")
    print_compare(report)
    for warning in report.warnings:
        console.print(f"nbest eval: warning: {warning}", style="bold red", highlight=False, markup=False)
    _write_report(report, report_path)
    if plots_dir is not None:
        paths = [write_compare_plot(report, plots_dir)]
        if SHARED in report.generations:
            paths += write_plots(report.generations[SHARED], plots_dir)
        for path in paths:
            click.echo(f"nbest eval: plot written to {path}", err=True)
