"""``nbest batch IN.jsonl -o OUT.jsonl``: N candidates for every prompt of a file, resumable.

::

    $ nbest batch questions.jsonl -o answers.jsonl -n 8 --reranker vote --concurrency 16

Every line of IN is checked before the engine starts: duplicate ids stop the
run (exit 2), and so does a line whose plan cannot be served (``input: line N
(id 'x'): ...``); other bad lines go to the errors file (``OUT.errors.jsonl``
unless ``--errors`` says otherwise) with their line number and reason, and the
rest runs (a line over a limit of :mod:`nbest.batch.inputs` too). IN is read
one line at a time, twice (checked, then parsed again as prompt slots free
up), so memory is O(in-flight window + ids), not O(lines): 16 bytes per id of
IN, the ids already in OUT, and the requests in progress (``--concurrency``;
with ``--ray``, the requests sent ahead to every replica). Ids already in OUT
are skipped, so rerunning the same command after a crash or Ctrl-C finishes
the job; see :mod:`nbest.batch.output` for why OUT never holds a corrupt line,
and why a second run on the same OUT stops (exit 2) while the first one
writes it. The folders of OUT and of the errors file must exist: both are
checked before anything else is done.

The sampling, strategy, reranker and engine options are those of ``nbest run``
(both take them from :mod:`nbest.cli.options`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from nbest.batch.inputs import BadLine, check_input
from nbest.batch.output import open_output, open_partial, partial_path, remove_stale_partials
from nbest.cli.options import (
    build_engines,
    build_prune,
    build_ranker,
    build_replica_spec,
    build_request,
    build_strategy,
    build_until,
    engine_options,
    quiet_vllm,
    ray_options,
    sampling_options,
    stdout_to_stderr,
    until_options,
)
from nbest.cli.paths import check_writable
from nbest.errors import ConfigError, EngineError
from nbest.types import DEFAULT_MAX_N

if TYPE_CHECKING:
    from nbest.distributed import RayOptions

__all__ = ["batch_command"]


class _ErrorsFile:
    """The errors file, written as bad lines are found while the input is
    checked (none is held in memory): into a hidden file beside it, put in
    place by :meth:`commit` once the whole input passed and OUT is ours, or
    removed by :meth:`discard` (a duplicate id, a locked OUT), so a refused
    run leaves the errors file of the last run as it was. A run killed
    meanwhile leaves its hidden file behind: the next one removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        remove_stale_partials(path)
        self._partial = partial_path(path)
        self._file: TextIO | None = None

    def write(self, line: BadLine) -> None:
        try:
            if self._file is None:
                self._file = open_partial(self._partial)
            self._file.write(json.dumps(line.model_dump(), ensure_ascii=False) + "\n")
        except OSError as exc:
            raise self._cannot(exc) from None

    def commit(self) -> None:
        """Put the errors in place (nothing to do without bad lines)."""
        if self._file is None:
            return
        try:
            self._file.close()
            os.replace(self._partial, self.path)
        except OSError as exc:
            self.discard()
            raise self._cannot(exc) from None

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            with contextlib.suppress(OSError):
                self._partial.unlink()
            self._file = None

    def _cannot(self, exc: OSError) -> ConfigError:
        return ConfigError(
            f"--errors: cannot write {self.path} ({exc.strerror or exc})", parameter="errors", value=str(self.path)
        )


@click.command("batch")
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Results, one JSON line per prompt (appended; ids already there are skipped).")  # fmt: skip
@sampling_options
@engine_options(compile_auto=True)
@click.option("--timeout", type=float, default=None, help="Seconds before a prompt's unfinished candidates are dropped.")
@until_options
@click.option("--concurrency", type=int, default=8, show_default=True, help="Prompts in progress at once (per replica, --ray).")
@click.option("--max-in-flight", type=int, default=64, show_default=True, help="Candidates generating at once.")
@click.option("--errors", "errors_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where bad input lines are reported [default: OUT.errors.jsonl].")  # fmt: skip
@ray_options
def batch_command(
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
    until: tuple[str, ...],
    prune: str | None,
    wave: int | None,
    concurrency: int,
    max_in_flight: int,
    errors_path: Path | None,
    ray: RayOptions | None,
    **sampling: Any,
) -> None:
    """Generate N candidates for every prompt of IN.jsonl, rank them, append each Result to OUT.

    IN holds one JSON object per line: "id", "prompt" (text) or "messages"
    (chat), and optional overrides: "n", "system", "metadata" and any sampling
    setting under its option's name with underscores ("temperature", "top_p",
    "max_tokens", "stop", ...).

    With --ray the prompts run on replicas on a Ray cluster, each an
    orchestrator with its own engine (the engine options are theirs), at most
    --concurrency prompts in progress on each; this process reads IN and
    writes OUT as without Ray. A replica that dies is replaced (at most
    --max-restarts times) and its prompts run elsewhere, each written once.
    """
    import anyio

    from nbest.batch.progress import BatchProgress
    from nbest.batch.runner import BatchStats, plan_check, run_batch, run_requests
    from nbest.orchestrator import Orchestrator

    # everything is validated before the engine starts; the paths first
    errors_path = errors_path or output_path.with_name(output_path.name + ".errors.jsonl")
    check_writable(output_path, "--output")
    check_writable(errors_path, "--errors")
    if errors_path.resolve() == output_path.resolve():
        raise ConfigError("--errors: must differ from the output file", parameter="errors", value=str(errors_path))
    if input_path.resolve() in (errors_path.resolve(), output_path.resolve()):
        which = "--errors" if input_path.resolve() == errors_path.resolve() else "--output"
        raise ConfigError(f"{which}: must differ from the input file", parameter=which.lstrip("-"), value=str(input_path))
    rule, wave = build_until(until, wave)
    policy = build_prune(prune)
    base = build_request("(per line)", n, system, **sampling)
    strategy = build_strategy(strategy_text)
    engines = build_engines(model, endpoints, engines_file)
    ranker = build_ranker(reranker_texts, engine=next(iter(engines.values())))
    if timeout is not None and timeout <= 0:
        raise ConfigError("--timeout: must be a positive number of seconds", parameter="timeout", value=timeout)
    for name, value in (("--concurrency", concurrency), ("--max-in-flight", max_in_flight)):
        if value < 1:
            raise ConfigError(f"{name}: must be at least 1 (got {value})", parameter=name, value=value)
    spec = None
    if ray is not None:
        from nbest.distributed import ReplicaPool

        spec = build_replica_spec(
            model, endpoints, engines_file, strategy=strategy, ranker=ranker, max_in_flight=max_in_flight,
            concurrency=concurrency, timeout=timeout, until=until[0] if until else None, wave=wave, prune=prune,
        )  # fmt: skip
        ReplicaPool(spec, ray)  # checks the spec and the options
    # the input, one line at a time: bad lines to the errors file, ids kept as
    # fingerprints, every plan checked; nothing runs unless it all passes
    orch = Orchestrator(engines, rerankers=ranker, max_in_flight=max_in_flight)  # started by main()
    if spec is not None and ray is not None:
        check = ReplicaPool(spec, ray).checker()  # as a replica will: before any starts
    else:
        check = plan_check(orch, strategy=strategy, prune=policy)  # as orch.run will
    errors = _ErrorsFile(errors_path)
    try:
        checked = check_input(input_path, base, max_n=DEFAULT_MAX_N, check=check, on_bad=errors.write)
        log, resume = open_output(output_path)
    except BaseException:
        errors.discard()
        raise
    if checked.bad_lines:
        try:
            errors.commit()
        except ConfigError:
            log.close()
            raise
        click.echo(f"nbest batch: {checked.bad_lines} bad input line(s) skipped, see {errors_path}", err=True)
    if resume.torn:
        click.echo(f"nbest batch: dropped a torn last line from {output_path} (its prompt runs again)", err=True)
    skipped = checked.already_done(resume.done)
    total = checked.prompts - skipped
    if skipped:
        click.echo(f"nbest batch: {skipped} prompt(s) already in {output_path}, skipped", err=True)
    if not total:
        log.close()
        click.echo(f"nbest batch: nothing to do ({checked.prompts} prompt(s) done)", err=True)
        return
    todo = checked.requests(skip=resume.done)  # parsed again as the run takes them
    stats_box: list[BatchStats] = []

    async def main() -> None:
        async with orch:
            with BatchProgress(total) as progress:
                stats = await run_batch(
                    orch,
                    todo,
                    log,
                    strategy=strategy,
                    timeout=timeout,
                    concurrency=concurrency,
                    until=rule,
                    wave=wave,
                    prune=policy,
                    on_result=progress.update,
                    total=total,
                )
            stats_box.append(stats)

    async def main_ray() -> None:
        from nbest.distributed import ReplicaPool

        assert spec is not None and ray is not None

        def say(message: str) -> None:
            click.echo(f"nbest batch: {message}", err=True)

        say(f"starting {ray.replicas} replica(s) on the Ray cluster")
        started = anyio.current_time()
        async with ReplicaPool(spec, ray, say=say) as pool:
            say(f"{pool.status()} in {anyio.current_time() - started:.1f} s")
            with BatchProgress(total, status=pool.status) as progress:
                sending = ray.replicas * pool.in_flight  # as many as pool.as_completed keeps on the replicas
                stats = await run_requests(todo, pool.run, log, concurrency=sending, total=total, on_result=progress.update)
                stats_box.append(stats)

    quiet_vllm()
    if ray is not None:
        from nbest.distributed import ray_cluster

        with ray_cluster(ray.address, verbose=ray.verbose), log, stdout_to_stderr():
            anyio.run(main_ray, backend="asyncio")
    else:
        with log, stdout_to_stderr():
            anyio.run(main, backend="asyncio")
    stats = stats_box[0]
    click.echo(f"nbest batch: {stats.done} prompt(s) written to {output_path} in {stats.elapsed:.1f} s", err=True)
    if stats.failed_prompts:
        raise EngineError(
            f"{len(stats.failed_prompts)} prompt(s) had every candidate fail (their errors are in {output_path}), "
            f"first: {stats.failed_prompts[0]}"
        )
