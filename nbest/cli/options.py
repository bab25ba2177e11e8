"""Options and builders shared by the commands that generate (run, batch, eval).

Each command validates everything it is given before an engine starts; these
helpers turn option values into nbest objects and raise ``ConfigError`` (exit 2)
on a user mistake.

A command line made with an engine factory (``nbest.cli.make_cli(engine_factory=...)``)
hands it to every command through the click context (:class:`CliSettings` as
``ctx.obj``): :func:`build_engines` then calls it with the command's
:class:`EngineOptions` instead of loading the engines those options name.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from nbest.engines.base import Engine
from nbest.errors import ConfigError
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import DEFAULT_MAX_N, Request, SamplingParams

__all__ = [
    "CliSettings",
    "EngineFactory",
    "EngineOptions",
    "build_engines",
    "build_ranker",
    "build_request",
    "build_strategy",
    "engine_options",
    "quiet_vllm",
    "sampling_options",
    "split_stop_rule",
    "stdout_to_stderr",
]


@dataclass(frozen=True)
class EngineOptions:
    """A command's engine options, as given (see :func:`engine_options`)."""

    model: str | None = None
    """``--model``: a Hugging Face id or folder; None: the embedded default."""
    endpoints: tuple[str, ...] = ()
    """``--endpoint`` URLs (OpenAI-compatible servers)."""
    engines_file: str | None = None
    """``--engines``: an engines file."""


EngineFactory = Callable[[EngineOptions], dict[str, Engine]]
"""Builds a command's engines, by route (the first one is the default), from its engine options."""


@dataclass(frozen=True)
class CliSettings:
    """What every command of a command line gets through the click context (``ctx.obj``)."""

    engine_factory: EngineFactory | None = None
    """Builds the engines instead of :func:`~nbest.engines.config.engines_from_options`
    (e.g. scripted engines in tests, or engines built in Python); None: the options say."""


def quiet_vllm() -> None:
    # vLLM logs to stdout by default; keep stdout for results (--json).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("TQDM_DISABLE", "1")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to fd 1 (by us, vLLM, its worker processes and
    native code) to stderr while the engine runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def sampling_options(func: Any) -> Any:
    """-n, the sampling settings, --system, --strategy and --reranker."""
    options = [
        click.option("-n", "n", type=int, default=8, show_default=True, help="Candidates per prompt."),
        click.option("--temperature", "-t", type=float, default=None, help="Base temperature (0 = greedy) [default: 1.0]."),
        click.option("--top-p", type=float, default=None, help="Nucleus sampling, in (0, 1]."),
        click.option("--top-k", type=int, default=None, help="Top-k sampling (-1 = off)."),
        click.option("--min-p", type=float, default=None, help="Min-p sampling, in [0, 1]."),
        click.option("--seed", type=int, default=None, help="Base seed: candidate i gets seed + i."),
        click.option("--max-tokens", type=int, default=None, help="Most new tokens per candidate [default: 256]."),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
        click.option("--system", default=None, help="System prompt."),
        click.option("--strategy", "strategy_text", default=None, help="Strategy: a name, JSON, or @file.yaml."),
        click.option("--reranker", "reranker_texts", multiple=True, help="Reranker NAME[:ARG][=WEIGHT] (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def split_stop_rule(sampling: dict[str, Any], wave: int | None) -> tuple[Any, int | None]:
    """Take an early-stopping rule (``--stop beta:0.95``) out of the ``--stop``
    values, which stay stop strings; return the rule and the wave size.

    Raises:
        ConfigError: several rules, a bad rule, or ``--wave`` without a rule.
    """
    from nbest import stopping
    from nbest.orchestrator.adaptive import check_adaptive

    texts = sampling.get("stop", ())
    rules = [stopping.parse_rule(text) for text in texts if stopping.is_rule_text(text)]
    if len(rules) > 1:
        raise ConfigError("--stop: give at most one stopping rule", parameter="stop")
    sampling["stop"] = tuple(text for text in texts if not stopping.is_rule_text(text))
    rule = rules[0] if rules else None
    return rule, check_adaptive(rule, wave)


def build_request(prompt: str, n: int, system: str | None, **sampling: Any) -> Request:
    """A validated Request from the sampling options (unset ones keep their defaults)."""
    given = {k: v for k, v in sampling.items() if v is not None and v != ()}
    if "stop" in given:
        given["stop"] = list(given["stop"])
    request = Request(prompt=prompt, n=n, params=SamplingParams(**given), system=system)
    if request.n > DEFAULT_MAX_N:
        raise ConfigError(f"-n: at most {DEFAULT_MAX_N} candidates per prompt (got {request.n})", parameter="n", value=request.n)
    return request


def build_engines(model: str | None, endpoints: tuple[str, ...] = (), engines_file: str | None = None) -> dict[str, Engine]:
    """The engines the command runs on, by route (built, not started): those of
    the engine factory the command line was made with (:class:`CliSettings` in
    the click context), else those of ``--engines``/``--endpoint``/``--model``
    (:func:`~nbest.engines.config.engines_from_options`, as for ``nbest run``).

    Raises:
        ConfigError: conflicting options, a bad URL, model name or engines file.
        TypeError: an engine factory that returned no engines or something else than engines.
    """
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(CliSettings) if ctx is not None else None
    if settings is not None and settings.engine_factory is not None:
        engines = settings.engine_factory(EngineOptions(model, tuple(endpoints), engines_file))
        if not engines or not all(isinstance(e, Engine) for e in engines.values()):
            raise TypeError(f"the engine factory must return engines by route, not {engines!r}")
        return engines
    from nbest.engines.config import engines_from_options

    return engines_from_options(model, endpoints, engines_file, os.environ)


def engine_options(func: Any) -> Any:
    """``--model``, ``--endpoint`` and ``--engines``, as ``nbest run`` has them."""
    func = click.option("--engines", "engines_file", default=None,
                        help="Engines file (.yaml/.json/.toml) naming local and remote engines.")(func)  # fmt: skip
    func = click.option("--endpoint", "endpoints", multiple=True,
                        help="OpenAI-compatible server URL (repeatable; key: $OPENAI_API_KEY).")(func)  # fmt: skip
    return click.option("--model", "-m", default=None, help="Model: a Hugging Face id, a folder, or the embedded default.")(func)


def build_strategy(text: str | None) -> Strategy | None:
    """``--strategy`` as a strategy (None: the orchestrator's default)."""
    from nbest import strategies

    return strategies.parse_spec(text) if text else None


def build_ranker(texts: tuple[str, ...], engine: Engine | None = None) -> Ranker | None:
    """``--reranker`` options as a Ranker (None: the orchestrator's default);
    ``engine`` serves a judge reranker."""
    if not texts:
        return None
    from nbest import rerankers

    parsed = [rerankers.parse_spec(text, engine=engine) for text in texts]
    return rerankers.Ranker([r for r, _ in parsed], weights=[w for _, w in parsed])
