"""``nbest models``: prepare and inspect models."""

from __future__ import annotations

import os

import click

from nbest.cli.options import stdout_to_stderr
from nbest.errors import ConfigError

__all__ = ["models_group"]


@click.group("models")
def models_group() -> None:
    """Prepare and inspect models."""


@models_group.command()
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
