"""``GET /``: the human-choice page, one static HTML file shipped with the package."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import HTMLResponse

__all__ = ["page", "router"]

router = APIRouter()


def page() -> str:
    """The page's HTML."""
    return files("nbest.server").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(
        page(),
        headers={
            "content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
            " style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
            "x-frame-options": "DENY",  # browsers without CSP frame-ancestors
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",  # the page's address may carry ?api_key=
            "cache-control": "no-store",
        },
    )
