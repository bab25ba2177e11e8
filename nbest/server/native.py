"""The native API: ``POST /v1/nbest`` (a Request in, the Result out) and
``POST /v1/nbest/stream`` (SSE: a ``candidate`` event per finished candidate,
then one ``ranked`` event with the Result).

With ``prune``, a pruned candidate streams as a ``candidate`` event like any other,
with ``finish_reason: "pruned"`` and its partial text (it is not ranked and does not
vote). With ``until``, candidates stream as they finish, wave after wave; when the rule
stops sampling, a candidate of the wave it cancelled may already have been sent: a
``dropped`` event (``{"indices": [...]}``) then lists those, before ``ranked``, whose
Result holds exactly the candidates that count (``samples_used`` of them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from nbest.errors import ConfigError, EngineDeadError, NbestError
from nbest.server.errors import ApiError, error_body, from_config_error
from nbest.server.service import Adaptive, Options, Service, read_json, until_disconnect
from nbest.server.sse import EventStream, format_event
from nbest.types import Request, Result

__all__ = ["NbestBody", "router"]

router = APIRouter()

PRIVATE_FIELDS = {"engines"}
"""Result fields the server keeps to itself: what its engines run with (model folders, engine
arguments, backend URLs) is the operator's business, not a client's (``nbest info`` shows it)."""


class NbestBody(Request, Options):
    """A Request plus how to plan and rank it (the fields of :class:`Options`)."""

    def split(self) -> tuple[Request, Options]:
        """The Request and the options; only the options the body gave are set on them
        (a field left out takes the server's default, one given as null is off)."""
        options = set(Options.model_fields)
        data = self.model_dump(exclude=options)
        return Request(**data), Options(**{name: getattr(self, name) for name in options & self.model_fields_set})


async def _body(http: HttpRequest, service: Service) -> tuple[Request, Options, Adaptive]:
    data = read_json(await http.body())
    try:
        request, options = NbestBody.parse(data).split()
    except ConfigError as exc:
        raise from_config_error(exc) from None
    service.check(request)
    adaptive = options.adaptive(request.n, defaults=service.settings)
    return service.issue_id(request, request.id if "id" in data else None), options, adaptive


@router.post("/v1/nbest", summary="Generate N candidates and return the ranked Result", response_model=None)
async def nbest(http: HttpRequest) -> Response:
    service: Service = http.app.state.service
    request, options, adaptive = await _body(http, service)
    try:
        result = await until_disconnect(http, lambda: service.run(request, options, adaptive))
    except ConfigError as exc:
        raise from_config_error(exc) from None
    if result is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    return Response(result.model_dump_json(exclude=PRIVATE_FIELDS), media_type="application/json")


@router.post("/v1/nbest/stream", summary="Stream candidates as Server-Sent Events, then the ranked Result", response_model=None)
async def nbest_stream(http: HttpRequest) -> EventStream:
    service: Service = http.app.state.service
    request, options, adaptive = await _body(http, service)
    strategy = await service.strategy(options.strategy)
    ranker = service.ranker(options.rerankers, request=request)
    # limits, plan errors and a prune the engines cannot do answer 422 before streaming starts
    request, _ = await service.plan(request, strategy, ranker, prune=adaptive.prune)

    async def events() -> AsyncIterator[bytes]:
        sent: list[int] = []
        try:
            yield format_event({"id": request.id, "n": request.n}, "start")
            async with contextlib.aclosing(service.events(request, options, adaptive, strategy, ranker)) as stream:
                async for event in stream:
                    if isinstance(event, Result):
                        counted = {c.index for c in event.candidates}
                        dropped = [index for index in sent if index not in counted]
                        if dropped:  # streamed from the wave the stopping rule cancelled
                            yield format_event({"indices": dropped, "samples_used": event.samples_used}, "dropped")
                        yield format_event(event.model_dump_json(exclude=PRIVATE_FIELDS), "ranked")
                    else:
                        sent.append(event.index)
                        yield format_event(event.model_dump_json(), "candidate")
        except ApiError as exc:  # the engine restarted under this request: 503
            yield format_event(error_body(exc.status, exc.message, exc.param), "error")
        except NbestError as exc:
            status = 422 if isinstance(exc, ConfigError) else 503 if isinstance(exc, EngineDeadError) else 502
            if isinstance(exc, EngineDeadError):
                service.engine_failed()
            yield format_event(error_body(status, str(exc)), "error")

    return EventStream(events())
