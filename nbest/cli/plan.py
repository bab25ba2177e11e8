"""``nbest plan``: print the plan a strategy makes for a prompt, without generating.

::

    $ nbest plan "Why is the sky blue?" -n 4 --seed 0 --strategy ladder:0.2-1.2 --json

Bad input raises :class:`~nbest.errors.ConfigError`; the ``nbest`` command
turns it into one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nbest.cli.options import build_request, build_strategy, sampling_param_options
from nbest.strategies.base import checked_plan
from nbest.strategies.fixed import Fixed
from nbest.types import CandidateSpec, Prompt

__all__ = ["plan_command", "plan_table", "prompt_summary"]


def prompt_summary(prompt: Prompt | None, width: int = 60) -> str:
    """A one-line view of a spec's prompt variant ("" when it uses the request's prompt).

    >>> from nbest.types import ChatMessage
    >>> prompt_summary([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Why?")])
    'system: Be brief. | user: Why?'
    """
    if prompt is None:
        return ""
    text = prompt if isinstance(prompt, str) else " | ".join(f"{m.role}: {m.content}" for m in prompt)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def plan_table(specs: Sequence[CandidateSpec], title: str | None = None) -> Table:
    """The plan as a rich table: one row per candidate, with its engine,
    strategy label, sampling settings, seed and prompt variant."""
    table = Table(title=title)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("engine", no_wrap=True)
    table.add_column("strategy", overflow="fold")
    for name in ("temp", "top_p", "top_k", "min_p", "seed"):
        table.add_column(name, justify="right", no_wrap=True)
    variants = any(s.prompt is not None for s in specs)
    if variants:
        table.add_column("prompt", overflow="fold")
    for s in specs:
        p = s.params
        row = [
            str(s.index),
            s.engine,
            s.strategy,
            f"{p.temperature:g}",
            f"{p.top_p:g}",
            str(p.top_k),
            f"{p.min_p:g}",
            str(p.seed),
        ]
        if variants:
            row.append(prompt_summary(s.prompt, width=36))
        table.add_row(*(Text(cell) for cell in row))  # Text: labels like "ladder[t=0.20]" are not markup
    return table


@click.command("plan")
@click.argument("prompt")
@click.option("-n", "n", type=int, default=8, show_default=True, help="Candidates per prompt.")
@sampling_param_options(seed="Base seed: candidate i gets seed + i (drawn at random when left out).")
@click.option("--system", default=None, help="System prompt.")
@click.option(
    "--strategy", "strategy_text", default="fixed", show_default=True, help="Strategy: a short form, JSON, or @file.yaml."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(
    prompt: str,
    n: int,
    seed: int | None,
    strategy_text: str,
    system: str | None,
    as_json: bool,
    **sampling: Any,
) -> None:
    """Print the plan STRATEGY makes for PROMPT: each candidate's engine,
    sampling settings, seed and prompt variant. Nothing is generated."""
    strategy = build_strategy(strategy_text) or Fixed()  # plugins' kinds too, as run has them
    if seed is None:
        seed = secrets.randbelow(2**31)
    request = build_request(prompt, n, system, seed=seed, **sampling)
    specs = checked_plan(strategy, request)
    if as_json:
        payload = {
            "n": request.n,
            "seed": seed,
            "strategy": strategy.model_dump(mode="json"),
            "specs": [s.model_dump(mode="json") for s in specs],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    Console().print(plan_table(specs, title=f"{strategy.kind} · n={request.n} · seed={seed}"))
