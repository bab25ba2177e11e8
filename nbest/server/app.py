"""The FastAPI app: ``create_app(orchestrator or factory, settings)``.

    app = create_app(lambda: Orchestrator(VLLMEngine.default()), ServerSettings(max_n=16))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Given an open :class:`~nbest.orchestrator.Orchestrator`, the app uses it as is
(the caller opens and closes it). Given a factory, the app opens the
orchestrator when it starts (the engine loads then) and closes it on shutdown;
when its engine dies, the app closes it and builds a new one with the factory
(see :mod:`nbest.server.supervisor` and ``restart=``).

``/healthz`` tells the truth: 200 only while the engines report themselves
healthy; 503 while starting or restarting (with ``Retry-After``), when an engine
is dead, or when the server gave up restarting it.

Routes: ``/v1/nbest`` and ``/v1/nbest/stream`` (native), ``/v1/chat/completions``,
``/v1/completions``, ``/v1/models`` (OpenAI-compatible), ``/v1/choices``
(preference log), ``/v1/ranker`` (the ranker and what it learned), ``/v1/settings``
(the defaults a generation request gets), ``/`` (the choice page), ``/healthz``,
``/metrics``.

With ``settings.learn`` the app also refits the ranker from the choices in the
background for as long as it runs (see :mod:`nbest.server.ranker_api`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from nbest.errors import ConfigError, EngineDeadError, NbestError
from nbest.orchestrator import Orchestrator
from nbest.plugins import load_plugins
from nbest.server import choices, native, openai_api, ranker_api, ui
from nbest.server.errors import ApiError, error_body, error_response, from_config_error
from nbest.server.guard import Guard
from nbest.server.metrics import CONTENT_TYPE_LATEST
from nbest.server.prefs import PreferenceStore
from nbest.server.schema import install_openapi
from nbest.server.service import Service
from nbest.server.settings import ServerDefaults, ServerSettings
from nbest.server.supervisor import RestartPolicy, Supervisor

__all__ = ["create_app"]


def create_app(
    orchestrator: Orchestrator | Callable[[], Orchestrator],
    settings: ServerSettings | None = None,
    *,
    prefs: PreferenceStore | None = None,
    restart: RestartPolicy | None = None,
) -> FastAPI:
    """Build the HTTP app around an orchestrator (or a factory of one).

    Args:
        orchestrator: an open orchestrator, or a callable returning a new one
            (opened on startup, closed on shutdown).
        settings: limits and options (defaults: :class:`ServerSettings`).
        prefs: the preference store (default: opened on first use at
            ``settings.preferences``).
        restart: how a dead engine is restarted (default: :class:`RestartPolicy`);
            only with a factory.
    """
    load_plugins()  # third-party strategy and reranker kinds a client may name
    settings = settings or ServerSettings()
    given = orchestrator if isinstance(orchestrator, Orchestrator) else None
    service = Service(given, settings, prefs)
    policy = restart or RestartPolicy()
    service.retry_after_s = policy.retry_after_s

    def opened(orch: Orchestrator | None) -> None:
        service.orchestrator = orch

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        supervisor: Supervisor | None = None
        failed: list[Exception] = []
        async with anyio.create_task_group() as tg:
            started = True
            if given is None:
                assert callable(orchestrator)
                supervisor = Supervisor(orchestrator, policy, opened, service.metrics.engine_restarts.inc)
                service.supervisor = supervisor
                tg.start_soon(supervisor.run)
                started = await supervisor.wait_started()
            if started and settings.learn:
                try:
                    live = service.start_learning()
                    await live.load()  # the versions saved before: they rank the first request
                    tg.start_soon(live.run)  # refits in the background, stopped at shutdown
                except Exception as exc:  # raised below, outside the task group (no ExceptionGroup)
                    failed.append(exc)
                    started = False
            if started:
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
            else:
                tg.cancel_scope.cancel()
        if failed:
            raise failed[0]
        if supervisor is not None:
            supervisor.raise_start_error()  # the first engine did not start: neither does the server

    app = FastAPI(title="nbest", summary="N candidates per prompt, reranked, with a confidence", lifespan=lifespan)
    app.state.service = service
    for module in (native, openai_api, choices, ranker_api, ui):
        app.include_router(module.router)

    service.metrics.engine_up.set_function(lambda: 1.0 if service.health()[0] == "ok" else 0.0)

    @app.get("/healthz", summary="Liveness and readiness: 200 only while the engine can serve")
    async def healthz() -> JSONResponse:
        status, detail = service.health()
        body: dict[str, Any] = {"status": status, "model": settings.model_name}
        if service.restarts:
            body["engine_restarts"] = service.restarts
        if detail:
            body["detail"] = detail
        if status == "ok":
            return JSONResponse(body)
        headers = {"retry-after": str(policy.retry_after_s)} if status in ("starting", "restarting") else None
        return JSONResponse(body, status_code=503, headers=headers)

    @app.get("/v1/settings", summary="The server's until, wave and prune: what a request that leaves them out gets")
    async def server_defaults() -> ServerDefaults:
        """Set by ``nbest serve --until/--wave/--prune`` (null: unset); a request's own value wins,
        and null in a request turns one off. Behind ``--api-key`` like every route but ``/healthz``."""
        return settings.defaults()

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def api_error(request: HttpRequest, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ConfigError)
    async def config_error(request: HttpRequest, exc: ConfigError) -> JSONResponse:
        return error_response(from_config_error(exc))

    @app.exception_handler(EngineDeadError)
    async def engine_dead(request: HttpRequest, exc: EngineDeadError) -> JSONResponse:
        service.engine_failed()
        return error_response(service.unavailable(f"{type(exc).__name__}: {exc}"))

    @app.exception_handler(NbestError)
    async def nbest_error(request: HttpRequest, exc: NbestError) -> JSONResponse:
        return JSONResponse(error_body(502, f"{type(exc).__name__}: {exc}"), status_code=502)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(422, f"{loc}: {first.get('msg', 'invalid')}", loc), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: HttpRequest, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    install_openapi(app)
    app.add_middleware(Guard, settings=settings, metrics=service.metrics)
    return app
