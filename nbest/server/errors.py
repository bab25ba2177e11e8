"""HTTP errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse

from nbest.errors import ConfigError

__all__ = ["ApiError", "error_body", "error_response", "from_config_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    421: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    507: "server_error",
}


class ApiError(Exception):
    """An error answered as JSON with ``status``; ``param`` names the offending field."""

    def __init__(self, status: int, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param, "code": status}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, exc.param), status_code=exc.status, headers=exc.headers)


# pydantic names the member of a union that failed ("prompt.str"); callers know the field as "prompt"
_UNION_MEMBER = re.compile(r"\.(?:str|int|float|bool|list\[[^\]]*\]|dict\[[^\]]*\])(?=[.:\[]|$)")


def from_config_error(exc: ConfigError, prefix: str = "") -> ApiError:
    """422 naming the field a ConfigError points at.

    >>> from_config_error(ConfigError("prompt.str: Input should be a valid string", parameter="prompt.str")).param
    'prompt'
    """
    param = _UNION_MEMBER.sub("", exc.parameter) if exc.parameter else None
    message = str(exc)
    if exc.parameter and param != exc.parameter and message.startswith(exc.parameter):
        message = str(param) + message[len(exc.parameter) :]
    if prefix and param:
        param = f"{prefix}.{param}"
    return ApiError(422, message, param=param)
