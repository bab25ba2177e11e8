"""The ``nbest`` command line.

User mistakes (bad values, unknown names, missing files) print one line on
stderr and exit with status 2, before any model loads; engine failures exit 1.

:func:`make_cli` builds the command group; given an engine factory, every
command builds its engines with it instead of loading those its options name
(scripted engines in tests, engines built in Python)::

    from nbest.cli import main
    main(["batch", "in.jsonl", "-o", "out.jsonl"], engine_factory=lambda options: {"default": my_engine})
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from nbest.cli.batch import batch_command
from nbest.cli.eval import eval_command
from nbest.cli.info import info_command
from nbest.cli.models import models_group
from nbest.cli.options import CliSettings, EngineFactory
from nbest.cli.plan import plan_command
from nbest.cli.prefs import prefs_group
from nbest.cli.run import run_command
from nbest.cli.serve import serve_command
from nbest.errors import ConfigError, EngineError, NbestError

__all__ = ["cli", "main", "make_cli"]


def make_cli(engine_factory: EngineFactory | None = None) -> click.Group:
    """The ``nbest`` command group; ``engine_factory`` (given the command's
    :class:`~nbest.cli.options.EngineOptions`) builds the engines of ``run``,
    ``batch``, ``eval`` and ``serve`` instead of the ``--model``/``--endpoint``/
    ``--engines`` options."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "obj": CliSettings(engine_factory)})
    @click.version_option(package_name="nbest")
    def cli() -> None:
        """nbest: N candidates per prompt on vLLM, reranked, with a confidence."""

    for command in (run_command, plan_command, batch_command, eval_command, serve_command, prefs_group, models_group,
                    info_command):  # fmt: skip
        cli.add_command(command)
    return cli


cli = make_cli()
"""The ``nbest`` command group (engines from the options)."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"nbest: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None, *, engine_factory: EngineFactory | None = None) -> None:
    """Entry point of the ``nbest`` script: run the command ``argv`` (default:
    the process arguments); ``engine_factory`` as for :func:`make_cli`. Returns
    when the command succeeded; otherwise prints one line and exits (2: a user
    mistake, 1: an engine failure, 130: interrupted)."""
    group = cli if engine_factory is None else make_cli(engine_factory)
    try:
        group.main(args=argv, prog_name="nbest", standalone_mode=False)
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
