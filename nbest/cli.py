"""The ``nbest`` command line.

User mistakes (bad values, unknown names, missing files) print one line on
stderr and exit with status 2, before any model loads; engine failures exit 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from nbest.batch.command import batch_command
from nbest.cli_options import (
    build_engines,
    build_ranker,
    build_request,
    build_strategy,
    engine_options,
    quiet_vllm,
    sampling_options,
    split_stop_rule,
    stdout_to_stderr,
)
from nbest.errors import ConfigError, EngineError, NbestError
from nbest.evaluation.command import eval_command
from nbest.server.cli import prefs_group, serve_command
from nbest.strategies.cli import plan_command
from nbest.types import Result

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbest")
def cli() -> None:
    """nbest: N candidates per prompt on vLLM, reranked, with a confidence."""


cli.add_command(plan_command)
cli.add_command(serve_command)
cli.add_command(prefs_group)


cli.add_command(batch_command)
cli.add_command(eval_command)


@cli.command()
@click.argument("prompt")
@sampling_options
@engine_options
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

    from nbest.orchestrator import Orchestrator

    # everything is validated before the engine starts
    rule, wave = split_stop_rule(sampling, wave)
    request = build_request(prompt, n, system, **sampling)
    strategy = build_strategy(strategy_text)
    engines = build_engines(model, endpoints, engines_file)
    ranker = build_ranker(reranker_texts, engine=next(iter(engines.values())))  # a judge asks the default route
    if timeout is not None and timeout <= 0:
        raise ConfigError("--timeout: must be a positive number of seconds", parameter="timeout", value=timeout)

    async def main() -> Result:
        async with Orchestrator(engines, rerankers=ranker) as orch:
            return await orch.run(request, strategy=strategy, timeout=timeout, stop=rule, wave=wave)

    quiet_vllm()
    with stdout_to_stderr():
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
    with stdout_to_stderr():
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
