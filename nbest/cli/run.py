"""``nbest run PROMPT``: N candidates for one prompt, ranked, as a table or JSON."""

from __future__ import annotations

from typing import Any

import click

from nbest.cli.options import (
    build_engines,
    build_prune,
    build_ranker,
    build_request,
    build_strategy,
    build_until,
    engine_options,
    quiet_vllm,
    sampling_options,
    stdout_to_stderr,
    until_options,
)
from nbest.errors import ConfigError, EngineError
from nbest.types import Result

__all__ = ["run_command"]


@click.command("run")
@click.argument("prompt")
@sampling_options
@engine_options
@click.option("--timeout", type=float, default=None, help="Seconds before unfinished candidates are dropped.")
@click.option("--json", "as_json", is_flag=True, help="Print the Result as JSON.")
@until_options
def run_command(
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
    until: tuple[str, ...],
    prune: str | None,
    wave: int | None,
    **sampling: Any,
) -> None:
    """Generate N candidates for PROMPT, rerank them, print them ranked.

    --until beta:P[:weighted], dirichlet:P[:weighted], confidence:P[:candidate] or esc:W is an
    early-stopping rule: sample in waves of --wave, stop once the answer is
    clear. --stop takes stop strings. --prune KEEP[:WARMUP[:WINDOW]] stops weak
    candidates while they generate; they are listed as pruned and do not vote.
    """
    import anyio

    from nbest.orchestrator import Orchestrator

    # everything is validated before the engine starts
    rule, wave = build_until(until, wave)
    policy = build_prune(prune)
    request = build_request(prompt, n, system, **sampling)
    strategy = build_strategy(strategy_text)
    engines = build_engines(model, endpoints, engines_file)
    ranker = build_ranker(reranker_texts, engine=next(iter(engines.values())))  # a judge asks the default route
    if timeout is not None and timeout <= 0:
        raise ConfigError("--timeout: must be a positive number of seconds", parameter="timeout", value=timeout)
    if policy is not None:  # an engine that cannot stream tokens is refused before it loads its model
        from nbest.orchestrator.pruning import check_prune

        check_prune(policy, engines, Orchestrator(engines, close_engines=False).plan(request, strategy)[1])

    async def main() -> Result:
        async with Orchestrator(engines, rerankers=ranker) as orch:
            return await orch.run(request, strategy=strategy, timeout=timeout, until=rule, wave=wave, prune=policy)

    quiet_vllm()
    with stdout_to_stderr():
        result = anyio.run(main, backend="asyncio")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        from nbest.cli.render import print_result

        print_result(result)
    if result.best is None:
        raise EngineError(f"all {len(result.candidates)} candidates failed; first error: {result.candidates[0].error}")
