"""The evaluation report as rich tables on the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from nbest.evaluation.report import EvalReport, Quality

if TYPE_CHECKING:
    from nbest.evaluation.compare import CompareReport, MethodRow

__all__ = ["applied_map", "compare_table", "print_compare", "print_report", "report_table"]


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def _quality(q: Quality | None, task: str) -> str:
    if q is None:
        return "–"
    if task == "accuracy":
        return _fmt(q.accuracy, percent=True)
    return f"{_fmt(q.chrf)} / {_fmt(q.bleu)}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def report_table(report: EvalReport) -> Table:
    """One row per N and reranker: its quality (and ECE, AUROC, PRR of its confidence), its
    cost (completion tokens per prompt, engine seconds); oracle@N and diversity once per N.
    The report's warnings are the caption."""
    what = "accuracy" if report.task == "accuracy" else "chrF / BLEU"
    title = (
        f"{report.dataset or 'eval'} · {report.prompts} prompts · {what} · "
        f"random sample {_quality(report.random, report.task)}"
        + (f" · greedy {_quality(report.greedy, report.task)}" if report.greedy is not None else "")
        + (f" · {report.completion_tokens} tokens" if report.completion_tokens else "")
        + (f" in {report.generate_s:.1f} s" if report.completion_tokens and report.generate_s else "")
    )
    caption = "\n".join(f"warning: {w}" for w in report.warnings) or None
    table = Table(title=title, caption=caption, caption_style="bold red")
    table.add_column("N", justify="right")
    table.add_column("reranker")
    table.add_column(what, justify="right")
    if report.task == "accuracy":
        table.add_column("ECE", justify="right")
        table.add_column("AUROC", justify="right")
        table.add_column("PRR", justify="right")
    table.add_column("tokens/prompt", justify="right")
    table.add_column("engine s", justify="right")
    table.add_column("oracle@N", justify="right")
    table.add_column("distinct-1/2", justify="right")
    table.add_column("self-BLEU", justify="right")
    for level in report.levels:
        d = level.diversity
        for row_index, (name, result) in enumerate(level.rerankers.items()):
            first = row_index == 0
            row = [str(level.n) if first else "", name, _quality(result.quality, report.task)]
            if report.task == "accuracy":
                row += [_fmt(result.ece), _fmt(result.auroc), _fmt(result.prr)]
            row += [f"{result.tokens:.0f}", _seconds(result.engine_s)]
            if first:
                row += [_quality(level.oracle, report.task), f"{d.distinct_1:.2f}/{d.distinct_2:.2f}", _fmt(d.self_bleu)]
            else:
                row += ["", "", ""]
            table.add_row(*row, end_section=row_index == len(level.rerankers) - 1)
    return table


def print_report(report: EvalReport, console: Console | None = None) -> None:
    """Print :func:`report_table` (on stdout; 160 columns wide when that is not a terminal)."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no need to squeeze the columns into 80
            console = Console(width=160)
    console.print(report_table(report))


def applied_map(report: CompareReport, row: MethodRow) -> str:
    """The calibration behind ``row``'s "ECE calibrated": the map ``--calibration`` applied
    to that method at that N, as ``scale,bias`` (``0.22,-1.64``: ``sigmoid(0.22 logit(c) - 1.64)``),
    or ``T=1.85`` for a temperature read from a report that holds temperatures only; "–"
    when nothing was applied (no ``--calibration``, none fitted for it, or a baseline).

    The row itself keeps what was *fitted* on this run (to carry to another); what was
    *applied* is on its generation's level (``applied_calibration``, ``applied_temperature``).
    """
    generation = report.generations.get(row.generation)
    level = next((lv for lv in generation.levels if lv.n == row.n), None) if generation is not None else None
    result = level.rerankers.get(row.method) if level is not None else None
    if result is None:
        return "–"
    if result.applied_calibration is not None:
        scale, bias = result.applied_calibration.scale, result.applied_calibration.bias
        return f"{scale:.2f},{bias:.2f}" if scale >= 0.005 else f"{scale:.0e},{bias:.2f}"  # a near-flat map is not 0
    if result.applied_temperature is not None:
        return f"T={result.applied_temperature:.2f}"
    return "–"


def compare_table(report: CompareReport) -> Table:
    """One row per method and N: accuracy, tokens per prompt and engine seconds (the
    cost), ECE (raw, and after ``--calibration`` with the map it applied: :func:`applied_map`),
    AUROC, PRR; ``*`` marks the Pareto front of accuracy against tokens. The warnings are
    the caption."""
    title = f"{report.dataset or 'eval'}" + (f" · split {report.split}" if report.split else "")
    title += f" · {report.prompts} prompts · N up to {report.n} · accuracy per token"
    caption = "\n".join(f"warning: {w}" for w in report.warnings) or None
    table = Table(title=title, caption=caption, caption_style="bold red")
    for header in ("method", "N", "accuracy", "tokens/prompt", "engine s", "ECE", "ECE calibrated", "map", "AUROC", "PRR",
                   "front"):  # fmt: skip
        table.add_column(header, justify="left" if header == "method" else "right")
    previous = None
    for row in report.rows:
        first = row.method != previous
        if first and previous is not None:
            table.add_section()
        previous = row.method
        table.add_row(
            row.method if first else "", str(row.n), _fmt(row.accuracy, percent=True), f"{row.tokens:.1f}",
            _seconds(row.engine_s), _fmt(row.ece), _fmt(row.ece_calibrated), applied_map(report, row),
            _fmt(row.auroc), _fmt(row.prr), "*" if row.pareto else "",
        )  # fmt: skip
    return table


def print_compare(report: CompareReport, console: Console | None = None) -> None:
    """Print :func:`compare_table` (on stdout; 160 columns wide when that is not a terminal)."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    console.print(compare_table(report))
