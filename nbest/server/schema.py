"""OpenAPI for the routes that read their JSON bodies themselves (to answer bad
JSON with 400 and bad fields with 422 naming the field): their body schemas are
the pydantic models, added to the generated document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

__all__ = ["install_openapi"]


def _bodies() -> dict[str, type[BaseModel]]:
    from nbest.server.choices import ChoiceBody
    from nbest.server.native import NbestBody
    from nbest.server.openai_api import ChatBody, CompletionBody

    return {"/v1/nbest": NbestBody, "/v1/nbest/stream": NbestBody, "/v1/chat/completions": ChatBody,
            "/v1/completions": CompletionBody, "/v1/choices": ChoiceBody}  # fmt: skip


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the hand-read request bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        bodies = _bodies()
        _, defs = models_json_schema(
            [(model, "validation") for model in set(bodies.values())], ref_template="#/components/schemas/{model}"
        )
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        for path, model in bodies.items():
            post = doc.get("paths", {}).get(path, {}).get("post")
            if post is not None:
                ref = {"$ref": f"#/components/schemas/{model.__name__}"}
                post["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
