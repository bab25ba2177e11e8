"""``nbest models``: prepare and inspect models."""

from __future__ import annotations

import os

import click

from nbest.cli.options import quiet_vllm, stdout_to_stderr
from nbest.errors import ConfigError

__all__ = ["models_group"]


@click.group("models")
def models_group() -> None:
    """Prepare and inspect models."""


@models_group.command()
@click.argument("name", required=False, default=None)
@click.option("--force", is_flag=True, help="Convert again even if the folder exists.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Then start it compiled once, so that its compile cache is warm: serve, batch and eval "
              "compile it from then on (on a CPU with native bf16).")  # fmt: skip
def prepare(name: str | None, force: bool, compile_model: bool) -> None:
    """Convert the embedded default model to safetensors (once); print its folder last.

    With ``--compile`` it also starts the model compiled (a minute or more the first
    time), which leaves torch's compile cache warm for this configuration.
    """
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
        if compile_model:
            _warm_compile_cache()
    click.echo(str(path))


def _warm_compile_cache() -> None:
    """Start the default model compiled (as ``serve``/``batch``/``eval`` would start it) and close it."""
    import anyio

    from nbest.engines.config import engines_from_options
    from nbest.engines.vllm import VLLMEngine

    async def main() -> None:
        # built as serve/batch/eval build it (--compile), so that the configuration is theirs
        engine = engines_from_options(None, (), None, os.environ, engine_args={"enforce_eager": False})["default"]
        assert isinstance(engine, VLLMEngine)
        try:
            await engine.start()
        finally:
            await engine.aclose()
        click.echo(f"compiled start: {engine.start_s:.1f} s; the compile cache is warm", err=True)

    quiet_vllm()
    anyio.run(main, backend="asyncio")
