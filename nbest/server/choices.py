"""``POST /v1/choices`` (log a person's choice), ``POST /v1/choices/{id}/withdraw``
(undo one: it stays in the log, marked withdrawn) and ``GET /v1/choices`` (paged)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import Field, model_validator
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse

from nbest.errors import ConfigError
from nbest.server.errors import ApiError, from_config_error
from nbest.server.prefs import StorageError
from nbest.server.ranker_api import MAX_SCOPE_CHARS, scope_labels
from nbest.server.service import MAX_JSON_INT, Service, read_json
from nbest.types import NbestModel, Result

__all__ = ["ChoiceBody", "router"]

router = APIRouter()

MAX_GROUP = 1024
"""Most entries of a choice's ``group`` (it may not list more than the Result's ``n`` either)."""


class ChoiceBody(NbestModel):
    """A person's choice among a Result's candidates."""

    result_id: str | None = None
    """Id of a Result this server produced recently (give this or ``result``)."""
    result: Result | None = None
    """The whole Result (for apps that generated it elsewhere)."""
    chosen: int = Field(ge=0)
    """Index of the chosen candidate."""
    ranking: list[int] | None = None
    """The person's ranking, best first (candidate indices), if they ranked them."""
    edited_text: str | None = None
    """The chosen text as the person edited it."""
    user: str | None = Field(default=None, max_length=200)
    """Who chose (default: the Result's ``metadata["user"]``)."""
    group: list[int] | None = Field(default=None, max_length=MAX_GROUP)
    """The candidates of the card the person picked (indices, the chosen one among them),
    when the page showed equivalent candidates as one option."""

    @model_validator(mode="after")
    def _one_source(self) -> ChoiceBody:
        if (self.result_id is None) == (self.result is None):
            raise ValueError("give exactly one of result_id or result")
        return self


@router.post("/v1/choices", summary="Log which candidate a person chose", status_code=201)
async def post_choice(http: HttpRequest) -> JSONResponse:
    service: Service = http.app.state.service
    try:
        body = ChoiceBody.parse(read_json(await http.body()))
    except ConfigError as exc:
        raise from_config_error(exc) from None
    result = body.result
    if result is None:
        result = service.results.get(body.result_id or "")
        if result is None:
            raise ApiError(
                404, f"result_id: no recent result {body.result_id!r}; send the whole result instead", param="result_id"
            )
    chosen = next((c for c in result.candidates if c.index == body.chosen), None)
    if chosen is not None and chosen.pruned:  # its text was cut off mid-answer: not an answer a person can prefer
        raise ApiError(
            422,
            f"chosen: candidate {body.chosen} was pruned (stopped after {chosen.num_tokens} tokens, its text partial); "
            "choose a complete one",
            param="chosen",
        )
    if body.group is not None:
        _check_group(body.group, body.chosen, result)
    task, user = scope_labels(result.metadata)
    if body.user is not None or service.learning is None or (user is not None and len(user) > MAX_SCOPE_CHARS):
        user = body.user  # a learning server files a choice without a user under the request's user
    try:
        store = service.prefs
        choice_id = await anyio.to_thread.run_sync(
            lambda: store.record(
                result, chosen=body.chosen, ranking=body.ranking, edited_text=body.edited_text, user=user, group=body.group
            )
        )
    except StorageError as exc:
        raise storage_error(exc, "the choice was not saved (send it again later)") from None
    except ConfigError as exc:
        raise from_config_error(exc) from None
    service.metrics.choices.inc()
    learning = None if service.learning is None else await service.learning.after_choice(task, user)
    return JSONResponse({"id": choice_id, "request_id": result.id, "chosen": body.chosen, "learning": learning}, status_code=201)


def _check_group(group: list[int], chosen: int, result: Result) -> None:
    """422 naming ``group`` unless it lists distinct candidates of ``result``, the chosen one among them."""
    indices = {c.index for c in result.candidates}
    problem = None
    if len(group) > result.n:
        problem = f"at most {result.n} entries (the result's n; got {len(group)})"
    elif len(set(group)) != len(group) or not set(group) <= indices:
        problem = f"must list distinct candidate indices of the result ({sorted(indices)[:20]}); got {group[:20]}"
    elif chosen not in group:
        problem = f"must include the chosen candidate {chosen}"
    if problem is not None:
        raise ApiError(422, f"group: {problem}", param="group")


@router.post("/v1/choices/{choice_id}/withdraw", summary="Withdraw (undo) a logged choice; it stays in the log, marked")
async def withdraw_choice(http: HttpRequest, choice_id: str) -> JSONResponse:
    """Mark choice ``choice_id`` withdrawn: it is kept in the log but left out of
    ``GET /v1/choices`` and of learning. 404 for an unknown id; withdrawing again is fine."""
    service: Service = http.app.state.service
    if not (choice_id.isascii() and choice_id.isdigit()) or len(choice_id) > 19 or not 1 <= int(choice_id) <= MAX_JSON_INT:
        raise ApiError(422, f"id: a choice id is a whole number from 1 to {MAX_JSON_INT} (got {choice_id[:40]!r})", param="id")
    ident = int(choice_id)
    try:
        store = service.prefs
        known = await anyio.to_thread.run_sync(lambda: store.withdraw(ident))
    except StorageError as exc:
        raise storage_error(exc, "the choice was not withdrawn (send it again later)") from None
    if not known:
        raise ApiError(404, f"id: no logged choice {ident}", param="id")
    return JSONResponse({"id": ident, "withdrawn": True})


def storage_error(exc: StorageError, what: str) -> ApiError:
    """507 when the disk is full, else 503 (read-only, I/O error), with SQLite's reason."""
    return ApiError(507 if exc.full else 503, f"{what}: {exc}", headers={"retry-after": "60"})


PAGE_BYTES = 16_000_000
"""A page of ``GET /v1/choices`` stops early once its Results pass this many bytes of JSON."""


@router.get("/v1/choices", summary="Logged choices, oldest first, paged")
async def get_choices(http: HttpRequest, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """At most ``limit`` choices from ``offset``; fewer when their Results pass 16 MB of
    JSON (the next page starts at ``offset + len(data)``)."""
    service: Service = http.app.state.service
    if offset < 0:
        raise ApiError(422, "offset: must not be negative", param="offset")
    if not 1 <= limit <= 500:
        raise ApiError(422, "limit: must be between 1 and 500", param="limit")
    try:
        store = service.prefs
        total = await anyio.to_thread.run_sync(store.count)
        page = await anyio.to_thread.run_sync(lambda: store.page(offset, limit, max_bytes=PAGE_BYTES))
    except StorageError as exc:
        raise storage_error(exc, "the choices could not be read") from None
    return {"object": "list", "total": total, "offset": offset, "limit": limit, "data": [c.model_dump(mode="json") for c in page]}
