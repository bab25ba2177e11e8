"""PNG plots of an evaluation report (matplotlib, Agg backend: no display needed).

- ``quality_vs_n.png``: accuracy (or chrF) of each reranker's top candidate vs
  N, with oracle@N and the random and greedy baselines;
- ``reliability.png`` (accuracy tasks): each reranker's reliability diagram at
  the largest N: accuracy per confidence bin against the diagonal;
- ``accuracy_vs_tokens.png`` (``--compare``, :func:`write_compare_plot`): two
  panels, accuracy against tokens generated per prompt with the Pareto front
  drawn through the rows no other beats, and accuracy against N.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbest.errors import ConfigError
from nbest.evaluation.report import EvalReport, Quality

if TYPE_CHECKING:
    from nbest.evaluation.compare import CompareReport

__all__ = ["write_compare_plot", "write_plots"]


def _value(q: Quality | None, task: str) -> float | None:
    if q is None:
        return None
    return q.accuracy if task == "accuracy" else q.chrf


def _values(qs: list[Quality], task: str) -> list[float]:
    return [v if (v := _value(q, task)) is not None else float("nan") for q in qs]


def _pyplot(folder: Path) -> Any:
    """Make ``folder`` (a plot's destination) and return ``matplotlib.pyplot`` on the
    non-interactive Agg backend (imported here: matplotlib is slow to import).

    Raises:
        ConfigError: ``folder`` exists and is not a folder.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--plots: {folder} is not a folder", parameter="plots", value=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: EvalReport, folder: Path) -> list[Path]:
    """Write the plots into ``folder`` (created if needed); return their paths.

    Raises:
        ConfigError: ``folder`` exists and is not a folder.
    """
    plt = _pyplot(folder)

    label = "accuracy" if report.task == "accuracy" else "chrF"
    ns = [level.n for level in report.levels]
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in report.levels[0].rerankers:
        ys = _values([level.rerankers[name].quality for level in report.levels], report.task)
        ax.plot(ns, ys, marker="o", label=name)
    ax.plot(ns, _values([level.oracle for level in report.levels], report.task), linestyle="--", color="grey", label="oracle@N")
    for baseline, q, style in (("random sample", report.random, ":"), ("greedy", report.greedy, "-.")):
        y = _value(q, report.task)
        if y is not None:
            ax.axhline(y, linestyle=style, color="black", linewidth=1, label=baseline)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (candidates per prompt)")
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs N · {report.prompts} prompts")
    written.append(_save(fig, ax, folder / "quality_vs_n.png"))

    if report.task == "accuracy":
        top = report.levels[-1]
        fig, ax = plt.subplots(figsize=(5.2, 5.2))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        for name, result in top.rerankers.items():
            points = [
                (b.confidence, b.accuracy) for b in result.reliability if b.confidence is not None and b.accuracy is not None
            ]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{name} (ECE {result.ece:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence of the top answer")
        ax.set_ylabel("accuracy")
        ax.set_title(f"reliability · N = {top.n}")
        written.append(_save(fig, ax, folder / "reliability.png"))
    return written


def write_compare_plot(report: CompareReport, folder: Path) -> Path:
    """Write ``accuracy_vs_tokens.png`` into ``folder`` (created if needed); return its path.

    Left: each method's rows as accuracy against tokens per prompt (log scale),
    the Pareto front as a dashed step line with its points ringed. Right: accuracy
    against N; a method measured at one N only (pruned, stopped) is one marker.

    Raises:
        ConfigError: ``folder`` exists and is not a folder.
    """
    plt = _pyplot(folder)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.6))
    for method in report.methods:
        rows = [r for r in report.rows if r.method == method and r.accuracy is not None]
        if not rows:
            continue
        xs, ys, ns = [r.tokens for r in rows], [r.accuracy for r in rows], [r.n for r in rows]
        style = {"linestyle": "--", "color": "grey"} if method == "oracle" else {}  # a ceiling, not a method
        (line,) = left.plot(xs, ys, marker="o", label=method, **style)
        right.plot(ns, ys, marker="o", label=method, **(style or {"color": line.get_color()}))
    front = sorted((r.tokens, r.accuracy) for r in report.rows if r.pareto and r.accuracy is not None)
    if front:
        left.step([t for t, _ in front], [a for _, a in front], where="post", linestyle="--", color="black", linewidth=1,
                  label="Pareto front")  # fmt: skip
        left.scatter([t for t, _ in front], [a for _, a in front], s=110, facecolors="none", edgecolors="black")
    if any(r.tokens > 0 for r in report.rows):
        left.set_xscale("log")
    left.set_xlabel("tokens generated per prompt (pruned ones included)")
    left.set_ylabel("accuracy")
    left.set_title(f"accuracy vs tokens · {report.prompts} prompts" + (f" · {report.split}" if report.split else ""))
    ns = sorted({r.n for r in report.rows})
    right.set_xscale("log", base=2)
    right.set_xticks(ns, [str(n) for n in ns])
    right.set_xlabel("N (candidates per prompt)")
    right.set_ylabel("accuracy")
    right.set_title("accuracy vs N")
    right.grid(True, alpha=0.3)
    right.legend(fontsize="small")
    return _save(fig, left, folder / "accuracy_vs_tokens.png")


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Grid, legend, tight layout; write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
