"""Options and builders shared by the commands that generate (run, batch, eval).

Each command validates everything it is given before an engine starts; these
helpers turn option values into nbest objects and raise ``ConfigError`` (exit 2)
on a user mistake.

A command line made with an engine factory (``nbest.cli.make_cli(engine_factory=...)``)
hands it to every command through the click context (:class:`CliSettings` as
``ctx.obj``): :func:`build_engines` then calls it with the command's
:class:`EngineOptions` instead of loading the engines those options name.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, overload

import click

from nbest.engines.base import Engine
from nbest.engines.cpu import AUTO
from nbest.errors import ConfigError
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import StrategyConfig
from nbest.types import DEFAULT_MAX_N, Request, SamplingParams

if TYPE_CHECKING:
    from nbest.distributed import ReplicaSpec
    from nbest.orchestrator.pruning import Prune
    from nbest.orchestrator.stopping import StoppingRule

__all__ = [
    "CLI_EXCLUDED",
    "CliSettings",
    "EngineFactory",
    "EngineOptions",
    "build_engines",
    "build_prune",
    "build_ranker",
    "build_replica_spec",
    "build_request",
    "build_strategy",
    "build_until",
    "check_wave",
    "compile_engine_args",
    "engine_options",
    "quiet_vllm",
    "ray_options",
    "sampling_options",
    "sampling_param_options",
    "stdout_to_stderr",
    "until_options",
]


@dataclass(frozen=True)
class EngineOptions:
    """A command's engine options, as given (see :func:`engine_options`)."""

    model: str | None = None
    """``--model``: a Hugging Face id or folder; None: the embedded default."""
    endpoints: tuple[str, ...] = ()
    """``--endpoint`` URLs (OpenAI-compatible servers)."""
    engines_file: str | None = None
    """``--engines``: an engines file."""
    compile: bool = False
    """``--compile``: the in-process engine compiles its model (vLLM ``enforce_eager=False``)."""


EngineFactory = Callable[[EngineOptions], dict[str, Engine]]
"""Builds a command's engines, by route (the first one is the default), from its engine options."""


@dataclass(frozen=True)
class CliSettings:
    """What every command of a command line gets through the click context (``ctx.obj``)."""

    engine_factory: EngineFactory | None = None
    """Builds the engines instead of :func:`~nbest.engines.config.engines_from_options`
    (e.g. scripted engines in tests, or engines built in Python); None: the options say."""


def quiet_vllm() -> None:
    # vLLM logs to stdout by default; keep stdout for results (--json).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("TQDM_DISABLE", "1")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
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


CLI_EXCLUDED: dict[str, str] = {
    "ignore_eos": "a benchmarking switch (generate to max_tokens past the end of the answer); "
    "set it in Python, a batch line or an HTTP body",
}
"""The :class:`~nbest.types.SamplingParams` fields that have no command-line
option, and why. Every other field is an option of ``nbest run``, ``batch``,
``eval`` and ``plan``, made by :func:`sampling_param_options`."""

_OPTION_HELP = {
    "seed": "Base seed: candidate i gets seed + i.",
    "stop": "Stop string (repeatable): generation ends there, not included in the text. A stopping rule goes to --until.",
}
_SHORT_FLAGS = {"temperature": "-t"}


def _option_type(name: str, annotation: Any) -> tuple[Any, bool]:
    """The click type of a field's option, and whether it repeats (a list field)."""
    if isinstance(annotation, types.UnionType) or get_origin(annotation) is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if get_origin(annotation) is list:
        return get_args(annotation)[0], True
    if annotation in (int, float, str, bool):
        return annotation, False
    raise TypeError(f"SamplingParams.{name}: no command-line option for {annotation!r}; add it to CLI_EXCLUDED or here")


def sampling_param_options(**help_text: str) -> Callable[[Any], Any]:
    """One option per :class:`~nbest.types.SamplingParams` field but those of
    :data:`CLI_EXCLUDED`: ``--top-p`` for ``top_p``, typed from the field's
    annotation, documented from its docstring and default (``help_text`` by
    field name overrides that). A list field repeats; a bool field is a
    ``--name/--no-name`` switch. Unset options are None (the field's default
    applies; see :func:`build_request`).

    Raises:
        TypeError: ``help_text`` for a field that has no option; a field whose
            type has no option form (add it to :data:`CLI_EXCLUDED`).
    """
    unknown = set(help_text) - (set(SamplingParams.model_fields) - set(CLI_EXCLUDED))
    if unknown:
        raise TypeError(f"sampling_param_options: no option for {sorted(unknown)}")

    def decorate(func: Any) -> Any:
        for name, field in reversed(SamplingParams.model_fields.items()):
            if name in CLI_EXCLUDED:
                continue
            kind, multiple = _option_type(name, field.annotation)
            flag = "--" + name.replace("_", "-")
            text = help_text.get(name) or _OPTION_HELP.get(name)
            if text is None:
                text = field.description or name
                if field.default_factory is None and field.default is not None:
                    text += f" [default: {field.default}]"
            if kind is bool:
                option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)
            elif multiple:
                option = click.option(flag, name, type=kind, multiple=True, help=text)
            else:
                flags = [flag, *([_SHORT_FLAGS[name]] if name in _SHORT_FLAGS else [])]
                option = click.option(*flags, name, type=kind, default=None, help=text)
            func = option(func)
        return func

    return decorate


def sampling_options(func: Any) -> Any:
    """-n, the sampling settings (:func:`sampling_param_options`), --system, --strategy and --reranker."""
    func = click.option("--reranker", "reranker_texts", multiple=True, help="Reranker NAME[:ARG][=WEIGHT] (repeatable).")(func)
    func = click.option("--strategy", "strategy_text", default=None, help="Strategy: a name, JSON, or @file.yaml.")(func)
    func = click.option("--system", default=None, help="System prompt.")(func)
    func = sampling_param_options()(func)
    return click.option("-n", "n", type=int, default=8, show_default=True, help="Candidates per prompt.")(func)


def until_options(func: Any) -> Any:
    """``--until RULE`` (an early-stopping rule), ``--wave N`` (see :func:`build_until`) and
    ``--prune POLICY`` (online pruning, see :func:`build_prune`)."""
    func = click.option("--prune", "prune", default=None, metavar="KEEP[:WARMUP[:WINDOW]]",
                        help="Stop weak candidates while they generate (DeepConf online): WARMUP candidates "
                        "[4] set a confidence threshold keeping KEEP of them (0.9, or high/low), later ones "
                        "are aborted once their WINDOW-token [16] group confidence falls below it.")(func)  # fmt: skip
    func = click.option("--wave", type=int, default=None,
                        help="Adaptive sampling: candidates per wave, with --until [default: 4].")(func)  # fmt: skip
    return click.option("--until", "until", multiple=True, metavar="RULE",
                        help="Stop sampling once the answer is clear: beta:P[:weighted], dirichlet:P[:weighted], "
                        "confidence:P[:candidate] or esc:W (sampled in waves of --wave).")(func)  # fmt: skip


def build_until(texts: tuple[str, ...], wave: int | None) -> tuple[StoppingRule | None, int | None]:
    """``--until`` and ``--wave`` as the stopping rule and the wave size (both
    None: generate the whole plan at once). Every error names the flag as typed
    (``--until``, ``--wave``), as :func:`build_prune` does for ``--prune``.

    Raises:
        ConfigError: a bad rule, several rules, a ``--wave`` below 1, or ``--wave``
            without a rule.
    """
    from nbest.orchestrator import stopping
    from nbest.orchestrator.adaptive import check_adaptive

    if len(texts) > 1:
        raise ConfigError("--until: give at most one stopping rule", parameter="until", value=list(texts))
    if wave is not None:  # the value first: a bad one is wrong with or without a rule
        check_wave(wave)
    if not texts:
        if wave is not None:
            raise ConfigError("--wave: only used with a stopping rule (--until beta:0.95)", parameter="wave", value=wave)
        return None, None
    rule = stopping.parse_rule(texts[0], name="--until")
    return rule, check_adaptive(rule, wave)


def check_wave(wave: int) -> None:
    """``--wave`` is a whole number of candidates, at least 1.

    Raises:
        ConfigError: naming ``--wave`` and what was given.
    """
    if wave < 1:
        raise ConfigError(f"--wave: must be a whole number >= 1 (got {wave})", parameter="wave", value=wave)


def build_prune(text: str | None) -> Prune | None:
    """``--prune`` as a pruning policy (None: no pruning).

    Raises:
        ConfigError: a bad policy, naming ``--prune`` and the form allowed.
    """
    from nbest.orchestrator.pruning import parse_prune

    return None if text is None else parse_prune(text, name="--prune")


def build_request(prompt: str, n: int, system: str | None, **sampling: Any) -> Request:
    """A validated Request from the sampling options (unset ones keep their defaults).

    Raises:
        ConfigError: a bad setting, too many candidates, or a ``--stop`` value
            that is a stopping rule (those go to ``--until``).
    """
    from nbest.orchestrator.stopping import is_rule_text

    given = {k: list(v) if isinstance(v, tuple) else v for k, v in sampling.items() if v is not None and v != ()}
    for text in given.get("stop", ()):
        if is_rule_text(text):
            raise ConfigError(
                f"--stop {text!r}: use --until {text.strip()} for a stopping rule; --stop takes stop strings",
                parameter="stop",
                value=text,
            )
    request = Request(prompt=prompt, n=n, params=SamplingParams(**given), system=system)
    if request.n > DEFAULT_MAX_N:
        raise ConfigError(f"-n: at most {DEFAULT_MAX_N} candidates per prompt (got {request.n})", parameter="n", value=request.n)
    return request


def build_engines(model: str | None, endpoints: tuple[str, ...] = (), engines_file: str | None = None) -> dict[str, Engine]:
    """The engines the command runs on, by route (built, not started): those of
    the engine factory the command line was made with (:class:`CliSettings` in
    the click context), else those of ``--engines``/``--endpoint``/``--model``
    (:func:`~nbest.engines.config.engines_from_options`, as for ``nbest run``).

    Raises:
        ConfigError: conflicting options, a bad URL, model name or engines file.
        TypeError: an engine factory that returned no engines or something else than engines.
    """
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(CliSettings) if ctx is not None else None
    if settings is not None and settings.engine_factory is not None:
        engines = settings.engine_factory(EngineOptions(model, tuple(endpoints), engines_file, _COMPILE.get() is True))
        if not engines or not all(isinstance(e, Engine) for e in engines.values()):
            raise TypeError(f"the engine factory must return engines by route, not {engines!r}")
        return engines
    from nbest.engines.config import engines_from_options

    return engines_from_options(
        model, endpoints, engines_file, os.environ, engine_args=compile_engine_args(endpoints, engines_file)
    )


_COMPILE: contextvars.ContextVar[bool | str | None] = contextvars.ContextVar("nbest_compile", default=None)
"""``--compile`` (True) / ``--eager`` (False) of the running command, else its default (``"auto"``
for the long-running commands, None for ``nbest run``); read by :func:`build_engines`, also
when a server rebuilds its engines."""


def compile_engine_args(endpoints: Sequence[str] = (), engines_file: str | None = None) -> dict[str, Any] | None:
    """The in-process engine's ``enforce_eager`` as the running command's ``--compile``/``--eager``
    (or its default) asks: explicit flags go to :func:`~nbest.engines.config.engine_configs`, which
    refuses them beside ``--endpoint``/``--engines``; the long-running commands' ``"auto"`` applies
    to the ``--model`` engine only (an engines file says ``enforce_eager`` per engine)."""
    choice = _COMPILE.get()
    if choice is None or (choice == AUTO and (endpoints or engines_file is not None)):
        return None
    return {"enforce_eager": AUTO if choice == AUTO else not choice}


@overload
def engine_options(func: None = None, *, compile_auto: bool = False) -> Callable[[Any], Any]: ...
@overload
def engine_options(func: Callable[..., Any], *, compile_auto: bool = False) -> Any: ...
def engine_options(func: Any = None, *, compile_auto: bool = False) -> Any:
    """``--model``, ``--endpoint``, ``--engines`` and ``--compile``/``--eager``, as ``nbest run`` has them.

    ``compile_auto``: without either flag the in-process engine compiles once the compile
    cache is warm (``enforce_eager="auto"``), for commands that run long enough to gain
    from it (``serve``, ``batch``, ``eval``); otherwise it runs eager on the CPU.
    """
    if func is None:
        return functools.partial(engine_options, compile_auto=compile_auto)
    wrapped = func

    @functools.wraps(wrapped)
    def command(*args: Any, compile_model: bool | None = None, **kwargs: Any) -> Any:
        token = _COMPILE.set(compile_model if compile_model is not None else (AUTO if compile_auto else None))
        try:
            return wrapped(*args, **kwargs)
        finally:
            _COMPILE.reset(token)

    signature = inspect.signature(wrapped)
    extra = inspect.Parameter("compile_model", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=bool | None)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [extra] + [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # what the command takes
    default = (
        "default: compiled once the compile cache is warm and the CPU computes bf16 natively, else eager"
        if compile_auto
        else "default: eager on the CPU"
    )
    func = click.option("--compile/--eager", "compile_model", default=None,
                        help="Compile the model with torch.compile (vLLM enforce_eager=False; the first start "
                        "takes a minute or more, later ones ~10 s more than eager; faster decoding) or not "
                        f"({default}).")(command)  # fmt: skip
    func = click.option("--engines", "engines_file", default=None,
                        help="Engines file (.yaml/.json/.toml) naming local and remote engines.")(func)  # fmt: skip
    func = click.option("--endpoint", "endpoints", multiple=True,
                        help="OpenAI-compatible server URL (repeatable; key: $OPENAI_API_KEY).")(func)  # fmt: skip
    return click.option("--model", "-m", default=None, help="Model: a Hugging Face id, a folder, or the embedded default.")(func)


def build_strategy(text: str | None) -> StrategyConfig | None:
    """``--strategy`` as a strategy (None: the orchestrator's default)."""
    from nbest.plugins import load_plugins
    from nbest.strategies import parse_spec

    load_plugins()
    return parse_spec(text) if text else None


def build_ranker(texts: tuple[str, ...], engine: Engine | None = None) -> Ranker | None:
    """``--reranker`` options as a Ranker (None: the orchestrator's default);
    ``engine`` serves a judge reranker. Plugins' reranker kinds are loaded first.

    Raises:
        ConfigError: an unknown or bad reranker (the message lists the short forms).
    """
    if not texts:
        return None
    from nbest.plugins import load_plugins
    from nbest.rerankers import build_ranker as build

    load_plugins()
    try:
        return build(texts, engine=engine)
    except ConfigError as exc:
        message = str(exc) if str(exc).startswith("--reranker") else f"--reranker: {exc}"
        raise ConfigError(message, parameter="reranker") from None


_RAY_PARAMS = ("ray_address", "replicas", "replica_cpus", "replica_gpus", "max_restarts", "verbose")


def ray_options(func: Any) -> Any:
    """``--ray [ADDRESS]``, ``--replicas``, ``--replica-cpus``, ``--replica-gpus``,
    ``--max-restarts`` and ``-v``: the command gets them as one ``ray`` keyword,
    a checked :class:`~nbest.distributed.RayOptions`, or None without ``--ray``.

    Raises:
        ConfigError: a bad value, a replica option without ``--ray``, or Ray not
            installed (``--ray needs Ray: pip install 'nbest[ray]'``).
    """
    wrapped = func

    @functools.wraps(wrapped)
    def command(
        *args: Any,
        ray_address: str | None = None,
        replicas: int | None = None,
        replica_cpus: float | None = None,
        replica_gpus: float | None = None,
        max_restarts: int | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> Any:
        given = {"--replicas": replicas, "--replica-cpus": replica_cpus, "--replica-gpus": replica_gpus,
                 "--max-restarts": max_restarts, "--verbose": verbose or None}  # fmt: skip
        if ray_address is None:
            for name, value in given.items():
                if value is not None:
                    raise ConfigError(f"{name}: only used with --ray", parameter=name, value=value)
            return wrapped(*args, ray=None, **kwargs)
        from nbest.distributed import RayOptions
        from nbest.distributed.cluster import import_ray

        options = RayOptions(
            address=None if ray_address == "local" else ray_address,
            replicas=1 if replicas is None else replicas,
            replica_cpus=1.0 if replica_cpus is None else replica_cpus,
            replica_gpus=0.0 if replica_gpus is None else replica_gpus,
            max_restarts=3 if max_restarts is None else max_restarts,
            verbose=verbose,
        )
        options.check()
        import_ray()
        return wrapped(*args, ray=options, **kwargs)

    signature = inspect.signature(wrapped)
    kinds = inspect.Parameter.KEYWORD_ONLY
    extra = [inspect.Parameter(name, kinds, default=None) for name in _RAY_PARAMS]
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name != "ray"]
    params += extra + [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # what the command takes
    func = click.option("-v", "--verbose", is_flag=True, default=False,
                        help="With --ray: show Ray's logs and the replicas' output.")(command)  # fmt: skip
    func = click.option("--max-restarts", type=int, default=None,
                        help="With --ray: replicas started again after one died, over the run [default: 3].")(func)  # fmt: skip
    func = click.option("--replica-gpus", type=float, default=None,
                        help="With --ray: GPUs reserved per replica [default: 0].")(func)  # fmt: skip
    func = click.option("--replica-cpus", type=float, default=None,
                        help="With --ray: CPUs reserved per replica [default: 1].")(func)  # fmt: skip
    func = click.option("--replicas", type=int, default=None,
                        help="With --ray: replicas, each an orchestrator with its own engine [default: 1].")(func)  # fmt: skip
    return click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                        help="Run on a Ray cluster: alone, start a local one; auto: join the running one; "
                        "HOST:PORT or ray://HOST:PORT: connect there.")(func)  # fmt: skip


def build_replica_spec(
    model: str | None,
    endpoints: tuple[str, ...],
    engines_file: str | None,
    *,
    strategy: StrategyConfig | None,
    ranker: Ranker | None,
    **settings: Any,
) -> ReplicaSpec:
    """What each replica of ``--ray`` builds its orchestrator from: the engines
    of ``--model``/``--endpoint``/``--engines`` (as configs), or the engine
    factory the command line was made with (its import path: a module-level
    function, called in each replica with the spec); ``settings`` are other
    :class:`~nbest.distributed.ReplicaSpec` fields (``concurrency``, ``until`` ...).

    Raises:
        ConfigError: as :func:`build_engines`, or an engine factory the replicas cannot import.
    """
    from nbest.distributed import ReplicaSpec, engine_configs
    from nbest.distributed.replica import environ_for

    rerankers = [c.model_dump(mode="json") for c in ranker.configs] if ranker is not None and ranker.configs else []
    if ranker is not None and not rerankers:
        raise ConfigError("--ray: the rerankers must come from their configs (--reranker)", parameter="reranker")
    common: dict[str, Any] = {
        "strategy": strategy.model_dump(mode="json") if strategy is not None else None,
        "rerankers": rerankers,
        **settings,
    }
    ctx = click.get_current_context(silent=True)
    cli_settings = ctx.find_object(CliSettings) if ctx is not None else None
    if cli_settings is not None and cli_settings.engine_factory is not None:
        factory = cli_settings.engine_factory
        module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
        if not module or module == "__main__" or "<" in name:
            raise ConfigError(
                f"--ray: the engine factory must be a module-level function the replicas can import (got {factory!r})",
                parameter="ray",
            )
        return ReplicaSpec(engine_factory=f"{module}:{name}", **common)
    configs = engine_configs(model, endpoints, engines_file, os.environ, compile_engine_args(endpoints, engines_file))
    return ReplicaSpec(engines=configs, environ=environ_for(configs, os.environ), **common)
