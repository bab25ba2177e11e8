"""``nbest serve``: the HTTP API and the choice page.

The environment (``NBEST_API_KEY``, ``NBEST_HOME``) is read here, and only
here; the app gets everything as :class:`~nbest.server.settings.ServerSettings`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from nbest.cli.options import (
    build_engines,
    build_prune,
    build_ranker,
    build_strategy,
    build_until,
    engine_options,
    until_options,
)
from nbest.errors import ConfigError

__all__ = ["serve_command"]


def _flag(field: str) -> str:
    """The flag that sets a :class:`~nbest.server.settings.ServerSettings` field
    (``learn_interval_s`` -> ``--learn-interval``, ``prune.keep`` -> ``--prune``)."""
    return "--" + field.split(".")[0].removesuffix("_s").replace("_", "-")


def _as_flag(exc: ConfigError) -> ConfigError:
    """A :class:`~nbest.server.settings.ServerSettings` error as the flag's: its message
    starts with the field (``wave: at most max_n ...``, as every nbest model's does), and
    the command line names the flag instead (``--wave: at most max_n ...``), once."""
    field = str(exc.parameter or "")
    reason = str(exc).removeprefix(f"{field}: ")
    return ConfigError(f"{_flag(field)}: {reason}", parameter=exc.parameter, value=exc.value)


@click.command("serve")
@engine_options(compile_auto=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes the server).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Another name clients reach the server by (repeatable; .example.com: its subdomains; *: any)"
    " [default: localhost and --host; any host for 0.0.0.0].",
)
@click.option(
    "--api-key",
    envvar="NBEST_API_KEY",
    default=None,
    help="Require this key (Bearer) on every route but /healthz [env: NBEST_API_KEY].",
)
@click.option("--max-n", type=int, default=None, help="Largest n accepted [default: 64].")
@click.option("--max-concurrent", type=int, default=None, help="Generation requests served at once; more get 429 [default: 16].")
@click.option("--max-body-bytes", type=int, default=None, help="Largest request body [default: 1000000].")
@click.option(
    "--max-prompt-chars",
    type=int,
    default=None,
    help="Longest prompt of a candidate, system prompt, source and prompt variants included [default: 32000].",
)
@click.option("--max-tokens", type=int, default=None, help="Largest max_tokens of one candidate [default: 4096].")
@click.option("--max-total-tokens", type=int, default=None, help="Largest n × max_tokens of one request [default: 65536].")
@click.option("--max-top-logprobs", type=int, default=None, help="Largest top_logprobs [default: 5].")
@click.option(
    "--max-rerank-n", type=int, default=None, help="Largest n when a client asks for an expensive reranker [default: 16]."
)
@click.option(
    "--max-rerank-tokens",
    type=int,
    default=None,
    help="Largest n × max_tokens when a client asks for an expensive reranker [default: 16384].",
)
@click.option(
    "--rerank-timeout", type=float, default=None, help="Seconds reranking may take without a request deadline [default: 60]."
)
@click.option(
    "--remember-bytes", type=int, default=None, help="Memory for Results kept for choices, in bytes [default: 64000000]."
)
@click.option("--timeout", type=float, default=None, help="Seconds before unfinished candidates are dropped.")
@click.option("--strategy", "strategy_text", default=None, help="Default strategy: a name, JSON, or @file.yaml.")
@click.option("--reranker", "reranker_texts", multiple=True, help="Default reranker NAME[:ARG][=WEIGHT] (repeatable).")
@click.option(
    "--ranker", "ranker_file", default=None, type=click.Path(dir_okay=False), help="Ranker config (from `nbest prefs fit`)."
)
@click.option("--db", "db", default=None, help="Preference database [default: $NBEST_HOME/preferences.db].")
@click.option(
    "--learn",
    is_flag=True,
    default=False,
    help="Refit the ranker from the choices in the background while serving (see /v1/ranker).",
)
@click.option("--learn-every", type=int, default=None, help="With --learn: refit after this many new choices [default: 10].")
@click.option(
    "--learn-min", type=int, default=None, help="With --learn: choices before the first refit takes effect [default: 20]."
)
@click.option(
    "--learn-interval",
    type=float,
    default=None,
    help="With --learn: seconds between timer refits of scopes with new choices; 0: off [default: 300].",
)
@click.option(
    "--learn-scope",
    type=click.Choice(["global", "task", "user"]),
    default=None,
    help="With --learn: one ranker for all, or one per metadata task or user (too few choices: the wider one) [default: global].",
)
@click.option(
    "--engine-restarts",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Tries to restart an in-process engine that died (1 s backoff, doubling); 0: never.",
)
@until_options
def serve_command(
    model: str | None,
    endpoints: tuple[str, ...],
    engines_file: str | None,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    api_key: str | None,
    max_n: int | None,
    max_concurrent: int | None,
    max_body_bytes: int | None,
    max_prompt_chars: int | None,
    max_tokens: int | None,
    max_total_tokens: int | None,
    max_top_logprobs: int | None,
    max_rerank_n: int | None,
    max_rerank_tokens: int | None,
    rerank_timeout: float | None,
    remember_bytes: int | None,
    timeout: float | None,
    strategy_text: str | None,
    reranker_texts: tuple[str, ...],
    ranker_file: str | None,
    db: str | None,
    learn: bool,
    learn_every: int | None,
    learn_min: int | None,
    learn_interval: float | None,
    learn_scope: str | None,
    engine_restarts: int,
    until: tuple[str, ...],
    wave: int | None,
    prune: str | None,
) -> None:
    """Serve the HTTP API (OpenAI-compatible and native) and the choice page at /.

    The engines are those of --model, --endpoint or --engines, as for `nbest
    run`; /v1/models reports --model (else the embedded default's name, or
    "nbest" for --endpoint/--engines).

    With --learn, the choices logged refit the ranker in the background (the
    server's ranker is the starting point; a version saved earlier in --db
    ranks from the start) and each Result records the version that ranked it.

    --until, --wave and --prune set adaptive sampling and online pruning for
    every generation request that does not set its own `until`/`wave`/`prune`
    (a request's value wins; null turns it off); GET /v1/settings reports them.
    With --prune every engine must stream tokens, checked before the server starts.
    """
    import uvicorn

    from nbest.engines.models import DEFAULT_MODEL
    from nbest.orchestrator import Orchestrator
    from nbest.rerankers import RankerConfig
    from nbest.server.app import create_app
    from nbest.server.guard import RedactApiKey, allowed_hosts_for
    from nbest.server.prefs import PreferenceStore, StorageError
    from nbest.server.settings import ServerSettings
    from nbest.server.supervisor import RestartPolicy

    given: dict[str, Any] = {
        "max_n": max_n, "max_concurrent": max_concurrent, "max_body_bytes": max_body_bytes,
        "max_prompt_chars": max_prompt_chars, "timeout_s": timeout, "preferences": db,
        "max_tokens": max_tokens, "max_total_tokens": max_total_tokens, "max_top_logprobs": max_top_logprobs,
        "max_rerank_n": max_rerank_n, "max_rerank_tokens": max_rerank_tokens, "rerank_timeout_s": rerank_timeout,
        "remember_bytes": remember_bytes,
        "learn_every": learn_every, "learn_min": learn_min, "learn_interval_s": learn_interval, "learn_scope": learn_scope,
        "until": until[0] if until else None, "wave": wave, "prune": prune,
    }  # fmt: skip
    # as nbest run checks them: each message names its flag, and an overlong text is refused
    # on its length (stopping.MAX_RULE_CHARS) before it is parsed or echoed back
    build_until(until, wave)
    build_prune(prune)
    learn_given = [name for name in ("learn_every", "learn_min", "learn_interval_s", "learn_scope") if given[name] is not None]
    if learn_given and not learn:
        option = _flag(learn_given[0])
        raise ConfigError(f"{option}: only with --learn (learning is off)", parameter=learn_given[0])
    served = model or ("nbest" if endpoints or engines_file else DEFAULT_MODEL)
    try:
        settings = ServerSettings(model_name=served, api_key=api_key or None, learn=learn,
                                  allowed_hosts=allowed_hosts_for(host, allowed_hosts),
                                  **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    except ConfigError as exc:
        raise _as_flag(exc) from None
    strategy = build_strategy(strategy_text)
    if ranker_file and reranker_texts:
        raise ConfigError("give --ranker or --reranker, not both", parameter="ranker")

    def build() -> tuple[dict[str, Any], Any]:
        engines = build_engines(model, endpoints, engines_file)
        ranker = None
        if ranker_file:
            ranker = RankerConfig.load(ranker_file).to_ranker(engine=next(iter(engines.values())))
        elif reranker_texts:
            ranker = build_ranker(reranker_texts, engine=next(iter(engines.values())))  # a judge asks the default route
        return engines, ranker

    built = [build()]  # built (checked) here, started by the app; a restart builds them anew
    try:
        settings.check_engines(built[0][0])  # --prune on an engine without token updates: refused now
    except ConfigError as exc:
        raise _as_flag(exc) from None
    try:
        prefs = PreferenceStore(settings.preferences)
    except StorageError as exc:
        raise ConfigError(f"--db: {exc}", parameter="db") from None
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        click.echo(f"nbest: warning: serving on {host} without --api-key: anyone who reaches it can generate", err=True)

    def orchestrator() -> Orchestrator:
        engines, ranker = built.pop() if built else build()
        return Orchestrator(engines, strategy=strategy, rerankers=ranker, max_n=settings.max_n)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.getLogger("uvicorn.access").addFilter(RedactApiKey())  # the page's address carries the key
    restart = RestartPolicy(max_attempts=engine_restarts)
    app = create_app(orchestrator, settings, prefs=prefs, restart=restart)
    click.echo(f"nbest: serving {settings.model_name} on http://{host}:{port}/ (preferences: {prefs.path})", err=True)
    if settings.until or settings.prune:
        adaptive = [f"--until {settings.until}"] if settings.until else []
        adaptive += [f"--wave {settings.wave}"] if settings.wave else []
        adaptive += [f"--prune {settings.prune}"] if settings.prune else []
        click.echo(
            f"nbest: by default {' '.join(adaptive)} (a request's own until/wave/prune wins; null: off; see /v1/settings)",
            err=True,
        )
    if settings.learn:
        timer = f", and every {settings.learn_interval_s:g} s" if settings.learn_interval_s else ""
        click.echo(
            f"nbest: learning from choices ({settings.learn_scope} scope): a refit every {settings.learn_every} choices"
            f"{timer}, from {settings.learn_min} on; see /v1/ranker",
            err=True,
        )
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
