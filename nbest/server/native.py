"""The native API: ``POST /v1/nbest`` (a Request in, the Result out) and
``POST /v1/nbest/stream`` (SSE: a ``candidate`` event per finished candidate,
then one ``ranked`` event with the Result)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from nbest.errors import ConfigError, EngineDeadError, NbestError
from nbest.server.errors import ApiError, error_body, from_config_error
from nbest.server.service import Options, Service, read_json, until_disconnect
from nbest.server.sse import EventStream, format_event
from nbest.types import Candidate, Request

__all__ = ["NbestBody", "router"]

router = APIRouter()


class NbestBody(Request, Options):
    """A Request plus how to plan and rank it (the fields of :class:`Options`)."""

    def split(self) -> tuple[Request, Options]:
        options = set(Options.model_fields)
        data = self.model_dump(exclude=options)
        return Request(**data), Options(**{name: getattr(self, name) for name in options})


async def _body(http: HttpRequest, service: Service) -> tuple[Request, Options]:
    data = read_json(await http.body())
    try:
        request, options = NbestBody.parse(data).split()
    except ConfigError as exc:
        raise from_config_error(exc) from None
    service.check(request)
    return service.issue_id(request, request.id if "id" in data else None), options


@router.post("/v1/nbest", summary="Generate N candidates and return the ranked Result", response_model=None)
async def nbest(http: HttpRequest) -> Response:
    service: Service = http.app.state.service
    request, options = await _body(http, service)
    try:
        result = await until_disconnect(http, lambda: service.run(request, options))
    except ConfigError as exc:
        raise from_config_error(exc) from None
    if result is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/v1/nbest/stream", summary="Stream candidates as Server-Sent Events, then the ranked Result", response_model=None)
async def nbest_stream(http: HttpRequest) -> EventStream:
    service: Service = http.app.state.service
    request, options = await _body(http, service)
    strategy = await service.strategy(options.strategy)
    ranker = service.ranker(options.rerankers, request=request)
    request, _ = await service.plan(request, strategy, ranker)  # limits and plan errors answer 422 before streaming starts

    async def events() -> AsyncIterator[bytes]:
        started = time.perf_counter()
        candidates: list[Candidate] = []
        try:
            yield format_event({"id": request.id, "n": request.n}, "start")
            async for candidate in service.stream(request, options, strategy):
                candidates.append(candidate)
                yield format_event(candidate.model_dump_json(), "candidate")
            result = await service.finish(request, candidates, ranker, time.perf_counter() - started, timeout=options.timeout)
            yield format_event(result.model_dump_json(), "ranked")
        except ApiError as exc:  # the engine restarted under this request: 503
            yield format_event(error_body(exc.status, exc.message, exc.param), "error")
        except NbestError as exc:
            status = 422 if isinstance(exc, ConfigError) else 503 if isinstance(exc, EngineDeadError) else 502
            if isinstance(exc, EngineDeadError):
                service.engine_failed()
            yield format_event(error_body(status, str(exc)), "error")

    return EventStream(events())
