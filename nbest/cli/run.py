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
@click.option("-v", "--verbose", is_flag=True, help="After the run, print on stderr what each engine ran with (one line each).")
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
    verbose: bool,
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
    -v prints on stderr what each engine ran with (the Result's ``engines``).
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
    if verbose:
        for route, info in result.engines.items():
            click.echo(engine_line(route, info), err=True)
    if result.best is None:
        raise EngineError(f"all {len(result.candidates)} candidates failed; first error: {result.candidates[0].error}")


def engine_line(route: str, info: dict[str, Any]) -> str:
    """One line for ``nbest run -v``: what the engine of ``route`` ran with (``Result.engines``).

    >>> engine_line("default", {"kind": "vllm", "model": "/m", "args": {"dtype": "bfloat16", "enforce_eager": True},
    ...                         "compile": None, "env": {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, "start_s": 12.3})
    'engine default: vllm /m (dtype=bfloat16, enforce_eager=True, VLLM_CPU_OMP_THREADS_BIND=0-1) started in 12.3 s'
    >>> engine_line("big", {"kind": "openai", "model": "q", "endpoints": ["http://h:8000/v1"], "chat": True, "stream": True})
    'engine big: openai q at http://h:8000/v1 (chat=True, stream=True)'
    >>> engine_line("x", {"kind": "Mine"})
    'engine x: Mine'
    """
    rest = dict(info)
    words = [f"engine {route}:", str(rest.pop("kind", "?"))]
    if rest.get("model") is not None:
        words.append(str(rest.pop("model")))
    if rest.get("endpoints"):
        words.append("at " + ", ".join(map(str, rest.pop("endpoints"))))
    args = rest.pop("args", None)
    compile_reason = rest.pop("compile", None)
    start_s = rest.pop("start_s", None)
    env = rest.pop("env", None)
    settings = dict(args) if isinstance(args, dict) else {}
    settings.update(env if isinstance(env, dict) else {})
    settings.update({k: v for k, v in rest.items() if v is not None and k != "model"})
    if settings:
        words.append("(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")")
    if start_s is not None:
        words.append(f"started in {start_s:g} s")
    line = " ".join(words)
    return f"{line}; {compile_reason}" if compile_reason else line
