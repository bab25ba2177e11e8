"""nbest's HTTP server: OpenAI-compatible and native API, SSE, the choice page, the preference log.

Needs the ``fastapi``, ``uvicorn`` and ``prometheus-client`` packages; nothing
here is imported by ``import nbest``.
"""

from __future__ import annotations

from nbest.server.app import create_app
from nbest.server.prefs import Choice, PreferenceStore
from nbest.server.settings import ServerSettings

__all__ = ["Choice", "PreferenceStore", "ServerSettings", "create_app"]
