"""``nbest batch IN.jsonl -o OUT.jsonl``: N candidates for every prompt of a file, resumable.

::

    $ nbest batch questions.jsonl -o answers.jsonl -n 8 --reranker vote --concurrency 16

Every line of IN is checked before the engine starts: duplicate ids stop the
run (exit 2), other bad lines go to the errors file (``OUT.errors.jsonl``
unless ``--errors`` says otherwise) with their line number and reason, and the
rest runs. Ids already in OUT are skipped, so rerunning the same command after
a crash or Ctrl-C finishes the job; see :mod:`nbest.batch.output` for why OUT
never holds a corrupt line.

The sampling, strategy and reranker options are those of ``nbest run``
(``make_batch_command`` takes its option decorator, so both stay the same).

``NBEST_ENGINE_FACTORY=module:callable`` (read here, for tests) makes the
command build its engine by calling ``callable()`` instead of the engines of
``--model``/``--endpoint``/``--engines``; the test suite uses it to run the command in a
subprocess on a scripted engine.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nbest.batch.inputs import BadLine, read_input
from nbest.batch.output import open_output
from nbest.engines.base import Engine
from nbest.errors import ConfigError, EngineError
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import DEFAULT_MAX_N

__all__ = ["ENGINE_FACTORY_ENV", "build_engines", "build_ranker", "build_strategy", "engine_options", "make_batch_command"]

ENGINE_FACTORY_ENV = "NBEST_ENGINE_FACTORY"
"""Environment variable naming a ``module:callable`` that returns the engine (for tests)."""

Decorator = Callable[[Any], Any]


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


def _write_errors(path: Path, bad: list[BadLine]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for line in bad:
            f.write(json.dumps(line.model_dump(), ensure_ascii=False) + "\n")


def make_batch_command(sampling_options: Decorator) -> click.Command:
    """The ``batch`` command, with ``nbest run``'s sampling/strategy/reranker options."""

    @click.command("batch")
    @click.argument("input_path", metavar="IN.jsonl", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="Results, one JSON line per prompt (appended; ids already there are skipped).")  # fmt: skip
    @sampling_options
    @engine_options
    @click.option("--timeout", type=float, default=None, help="Seconds before a prompt's unfinished candidates are dropped.")
    @click.option("--wave", type=int, default=None, help="Adaptive sampling: candidates per wave, with --stop RULE [default: 4].")
    @click.option("--concurrency", type=int, default=8, show_default=True, help="Prompts in progress at once.")
    @click.option("--max-in-flight", type=int, default=64, show_default=True, help="Candidates generating at once.")
    @click.option("--errors", "errors_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                  help="Where bad input lines are reported [default: OUT.errors.jsonl].")  # fmt: skip
    def batch(
        input_path: Path,
        output_path: Path,
        n: int,
        system: str | None,
        strategy_text: str | None,
        reranker_texts: tuple[str, ...],
        model: str | None,
        endpoints: tuple[str, ...],
        engines_file: str | None,
        timeout: float | None,
        wave: int | None,
        concurrency: int,
        max_in_flight: int,
        errors_path: Path | None,
        **sampling: Any,
    ) -> None:
        """Generate N candidates for every prompt of IN.jsonl, rank them, append each Result to OUT.

        IN holds one JSON object per line: "id", "prompt" (text) or "messages"
        (chat), and optional overrides ("n", "temperature", "top_p", "top_k",
        "min_p", "max_tokens", "seed", "stop", "system", "metadata").
        """
        import anyio

        from nbest.batch.progress import BatchProgress
        from nbest.batch.runner import BatchStats, run_batch
        from nbest.cli import _build_request, _quiet_vllm, _stdout_to_stderr, split_stop_rule
        from nbest.orchestrator import Orchestrator

        # everything is validated before the engine starts
        rule, wave = split_stop_rule(sampling, wave)
        base = _build_request("(per line)", n, system, **sampling)
        strategy = build_strategy(strategy_text)
        engines = build_engines(model, endpoints, engines_file)
        ranker = build_ranker(reranker_texts, engine=next(iter(engines.values())))
        if timeout is not None and timeout <= 0:
            raise ConfigError("--timeout: must be a positive number of seconds", parameter="timeout", value=timeout)
        for name, value in (("--concurrency", concurrency), ("--max-in-flight", max_in_flight)):
            if value < 1:
                raise ConfigError(f"{name}: must be at least 1 (got {value})", parameter=name, value=value)
        parsed = read_input(input_path, base, max_n=DEFAULT_MAX_N)
        errors_path = errors_path or output_path.with_name(output_path.name + ".errors.jsonl")
        if errors_path.resolve() == output_path.resolve():
            raise ConfigError("--errors: must differ from the output file", parameter="errors", value=str(errors_path))
        log, resume = open_output(output_path)
        if parsed.bad:
            _write_errors(errors_path, parsed.bad)
            click.echo(f"nbest batch: {len(parsed.bad)} bad input line(s) skipped, see {errors_path}", err=True)
        if resume.torn:
            click.echo(f"nbest batch: dropped a torn last line from {output_path} (its prompt runs again)", err=True)
        todo = [r for r in parsed.requests if r.id not in resume.done]
        skipped = len(parsed.requests) - len(todo)
        if skipped:
            click.echo(f"nbest batch: {skipped} prompt(s) already in {output_path}, skipped", err=True)
        if not todo:
            log.close()
            click.echo(f"nbest batch: nothing to do ({len(parsed.requests)} prompt(s) done)", err=True)
            return
        stats_box: list[BatchStats] = []

        async def main() -> None:
            async with Orchestrator(engines, rerankers=ranker, max_in_flight=max_in_flight) as orch:
                with BatchProgress(len(todo)) as progress:
                    stats = await run_batch(
                        orch,
                        todo,
                        log,
                        strategy=strategy,
                        timeout=timeout,
                        concurrency=concurrency,
                        stop=rule,
                        wave=wave,
                        on_result=progress.update,
                    )
                stats_box.append(stats)

        _quiet_vllm()
        with log, _stdout_to_stderr():
            anyio.run(main, backend="asyncio")
        stats = stats_box[0]
        click.echo(f"nbest batch: {stats.done} prompt(s) written to {output_path} in {stats.elapsed:.1f} s", err=True)
        if stats.failed_prompts:
            raise EngineError(
                f"{len(stats.failed_prompts)} prompt(s) had every candidate fail (their errors are in {output_path}), "
                f"first: {stats.failed_prompts[0]}"
            )

    return batch
