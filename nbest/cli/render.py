"""Readable terminal output of a Result (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nbest.types import Candidate, Result

__all__ = ["print_result", "result_table"]


def _bar(confidence: float | None, width: int = 10) -> Text:
    if confidence is None:
        return Text("-")
    filled = round(confidence * width)
    return Text("█" * filled + "░" * (width - filled) + f" {confidence:.2f}")


def _settings(c: Candidate) -> str:
    p = c.spec.params
    parts = [f"t={p.temperature:g}"]
    if p.top_p < 1:
        parts.append(f"p={p.top_p:g}")
    if p.top_k != -1:
        parts.append(f"k={p.top_k}")
    if p.min_p > 0:
        parts.append(f"min_p={p.min_p:g}")
    parts.append(f"seed={p.seed}")
    if c.spec.engine != "default":
        parts.append(c.spec.engine)
    return " ".join(parts)


def result_table(result: Result, max_chars: int = 300) -> Table:
    """The candidates, best first: rank, confidence bar, score, settings, text
    (cut at ``max_chars``; the Result keeps it whole)."""
    table = Table(title=f"{len(result.candidates)} candidates", show_lines=True, expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("confidence", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("settings", no_wrap=False, max_width=22)
    table.add_column("text", ratio=1)
    for c in result.candidates:
        rank = str(c.rank) if c.rank is not None else ("-" if c.pruned else "✗")
        score = f"{c.score:.3f}" if c.score is not None else "-"
        body = c.text.strip()
        if len(body) > max_chars:
            body = body[: max_chars - 1].rstrip() + "…"
        if c.pruned:  # stopped early by --prune: partial text, no vote
            text = Text(f"[pruned after {c.num_tokens} tokens] {body}", style="dim")
        else:
            text = Text(body) if c.ok else Text(f"[{c.finish_reason}] {c.error}", style="red")
        table.add_row(rank, _bar(c.confidence), score, _settings(c), text)
    return table


def print_result(result: Result, console: Console | None = None) -> None:
    """Print the ranked table and a one-line verdict."""
    console = console or Console()
    console.print(result_table(result))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if result.best is not None:
        best = result.best
        console.print(
            f"best: #{best.index} (confidence {best.confidence:.2f}) · "
            f"{result.usage.completion_tokens} tokens in {result.timings.generate_s:.1f} s"
        )
