"""The evaluation report as rich tables on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from nbest.evaluation.report import EvalReport, Quality

__all__ = ["print_report", "report_table"]


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
