"""The ``nbest`` command line.

User mistakes (bad values, unknown names, missing files) print one line on
stderr and exit with status 2, before any model loads; engine failures exit 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from nbest.batch.command import make_batch_command
from nbest.errors import ConfigError, EngineError, NbestError
from nbest.evaluation.command import make_eval_command
from nbest.server.cli import prefs_group, serve_command
from nbest.strategies.cli import plan_command
from nbest.types import DEFAULT_MAX_N, Request, Result, SamplingParams

__all__ = ["cli", "main"]


def _quiet_vllm() -> None:
    # vLLM logs to stdout by default; keep stdout for results (--json).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("TQDM_DISABLE", "1")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbest")
def cli() -> None:
    """nbest: N candidates per prompt on vLLM, reranked, with a confidence."""


cli.add_command(plan_command)
cli.add_command(serve_command)
cli.add_command(prefs_group)


def _sampling_options(func: Any) -> Any:
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


def _build_request(prompt: str, n: int, system: str | None, **sampling: Any) -> Request:
    given = {k: v for k, v in sampling.items() if v is not None and v != ()}
    if "stop" in given:
        given["stop"] = list(given["stop"])
    request = Request(prompt=prompt, n=n, params=SamplingParams(**given), system=system)
    if request.n > DEFAULT_MAX_N:
        raise ConfigError(f"-n: at most {DEFAULT_MAX_N} candidates per prompt (got {request.n})", parameter="n", value=request.n)
    return request


cli.add_command(make_batch_command(_sampling_options))
cli.add_command(make_eval_command(_sampling_options))


@cli.command()
@click.argument("prompt")
@_sampling_options
@click.option("--model", "-m", default=None, help="Model: a Hugging Face id, a folder, or the embedded default.")
@click.option("--endpoint", "endpoints", multiple=True, help="OpenAI-compatible server URL (repeatable; key: $OPENAI_API_KEY).")
@click.option("--engines", "engines_file", default=None, help="Engines file (.yaml/.json/.toml) naming local and remote engines.")
@click.option("--timeout", type=float, default=None, help="Seconds before unfinished candidates are dropped.")
@click.option("--json", "as_json", is_flag=True, help="Print the Result as JSON.")
@click.option("--wave", type=int, default=None, help="Adaptive sampling: candidates per wave, with --stop RULE [default: 4].")
def run(
    prompt: str,
    n: int,
    system: str | None,
    strategy_text: str | None,
    reranker_texts: tuple[str, ...],
    model: str | None,
    endpoints: tuple[str, ...],
    engines_file: str | None,
    timeout: float | None,
    as_json: bool,
    wave: int | None,
    **sampling: Any,
) -> None:
    """Generate N candidates for PROMPT, rerank them, print them ranked.

    --stop beta:P, dirichlet:P or confidence:P[:candidate] is an early-stopping
    rule (sample in waves of --wave, stop once the answer is clear); any other
    --stop is a stop string.
    """
    import anyio

    from nbest import rerankers, strategies
    from nbest.engines.config import engines_from_options
    from nbest.orchestrator import Orchestrator

    # everything is validated before the engine starts
    rule, wave = split_stop_rule(sampling, wave)
    request = _build_request(prompt, n, system, **sampling)
    strategy = strategies.parse_spec(strategy_text) if strategy_text else None
    engines = engines_from_options(model, endpoints, engines_file, os.environ)
    judge_engine = next(iter(engines.values()))  # the first is the orchestrator's "default" route
    ranker = None
    if reranker_texts:
        parsed = [rerankers.parse_spec(text, engine=judge_engine) for text in reranker_texts]
        ranker = rerankers.Ranker([r for r, _ in parsed], weights=[w for _, w in parsed])
    if timeout is not None and timeout <= 0:
        raise ConfigError("--timeout: must be a positive number of seconds", parameter="timeout", value=timeout)

    async def main() -> Result:
        async with Orchestrator(engines, rerankers=ranker) as orch:
            return await orch.run(request, strategy=strategy, timeout=timeout, stop=rule, wave=wave)

    _quiet_vllm()
    with _stdout_to_stderr():
        result = anyio.run(main, backend="asyncio")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        from nbest.render import print_result

        print_result(result)
    if result.best is None:
        raise EngineError(f"all {len(result.candidates)} candidates failed; first error: {result.candidates[0].error}")


@cli.group()
def models() -> None:
    """Prepare and inspect models."""


@models.command()
@click.argument("name", required=False, default=None)
@click.option("--force", is_flag=True, help="Convert again even if the folder exists.")
def prepare(name: str | None, force: bool) -> None:
    """Convert the embedded default model to safetensors (once); print its folder last."""
    from nbest.engines.models import DEFAULT_MODEL, prepare_default_model

    if name not in (None, DEFAULT_MODEL):
        raise ConfigError(
            f"models prepare: only the embedded default {DEFAULT_MODEL!r} needs preparing (got {name!r})",
            parameter="name",
            value=name,
        )
    os.environ.setdefault("TQDM_DISABLE", "1")
    with _stdout_to_stderr():
        path = prepare_default_model(force=force)
    click.echo(str(path))


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"nbest: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nbest`` script."""
    try:
        cli.main(args=argv, prog_name="nbest", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__.startswith("NoArgsIsHelp") and exc.ctx is not None:
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(2)
        _fail(exc.format_message(), 2)
    except click.Abort:
        _fail("interrupted", 130)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except (EngineError, NbestError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
