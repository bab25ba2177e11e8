"""Options and builders shared by the commands that generate (run, batch, eval).

Each command validates everything it is given before an engine starts; these
helpers turn option values into nbest objects and raise ``ConfigError`` (exit 2)
on a user mistake.

``NBEST_ENGINE_FACTORY=module:callable`` (read by :func:`build_engines`, for
tests) makes a command build its engine by calling ``callable()`` instead of the
engines of ``--model``/``--endpoint``/``--engines``; the test suite uses it to
run commands in a subprocess on a scripted engine.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from nbest.engines.base import Engine
from nbest.errors import ConfigError
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import DEFAULT_MAX_N, Request, SamplingParams

__all__ = [
    "ENGINE_FACTORY_ENV",
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

ENGINE_FACTORY_ENV = "NBEST_ENGINE_FACTORY"
"""Environment variable naming a ``module:callable`` that returns the engine (for tests)."""


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
    """The engines the command runs on, by route: ``{"default": factory()}`` when
    ``$NBEST_ENGINE_FACTORY`` is set, else those of ``--engines``/``--endpoint``/``--model``
    (as for ``nbest run``).

    Raises:
        ConfigError: a factory that cannot be imported, conflicting options, a bad model name.
    """
    factory_path = os.environ.get(ENGINE_FACTORY_ENV)
    if factory_path:
        module_name, _, attr = factory_path.partition(":")
        try:
            factory: Callable[[], object] = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"{ENGINE_FACTORY_ENV}: cannot load {factory_path!r} (want module:callable): {exc}",
                parameter=ENGINE_FACTORY_ENV,
                value=factory_path,
            ) from None
        engine = factory()
        if not isinstance(engine, Engine):
            raise ConfigError(f"{ENGINE_FACTORY_ENV}: {factory_path} did not return an Engine", parameter=ENGINE_FACTORY_ENV)
        return {"default": engine}
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
