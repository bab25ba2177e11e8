"""How :class:`~nbest.engines.openai.OpenAIEngine` reads one attempt's answer over HTTP.

An attempt is one candidate's request on one endpoint. :class:`AnswerReading`
holds the engine's two readers: ``_answer`` reads an answer whole (streamed or
not) into its final update, ``_events`` reads a streamed answer as its bytes
arrive, a partial update per chunk that brings tokens. Both bound every wait by
``read_timeout`` and the candidate's deadline, every body by a byte limit
(:func:`_response_limit`), and end quietly when the attempt's cancel scope is
cancelled (an abort, or its endpoint failed under another request).

What goes wrong is classified here, for the engine's failover loop to count
(see :mod:`nbest.engines.openai`): :class:`ConnectionFailure` (the connection
failed or went silent), :class:`EndpointFailure` (a wrong answer: HTTP 429/5xx,
not an OpenAI response), ``_Rejected`` (HTTP 4xx: maybe the request's fault),
:class:`~nbest.errors.GenerationError` (past the deadline). The wire format
itself is parsed in :mod:`nbest.engines._openai_wire`, which raises plain
``ValueError`` and friends (:data:`MALFORMED`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx

from nbest.engines._openai_wire import TokenReader, error_message, final_update, merge_events
from nbest.engines.fleet import Endpoint
from nbest.errors import EngineError, GenerationError
from nbest.types import CandidateUpdate, SamplingParams

__all__ = ["ERROR_BODY_BYTES", "MALFORMED", "AnswerReading", "ConnectionFailure", "EndpointFailure"]

T = TypeVar("T")

ERROR_BODY_BYTES = 65536
"""Most bytes of an error response that are read."""

MALFORMED = (ValueError, TypeError, KeyError, AttributeError, RecursionError)
"""What reading an answer that is not an OpenAI response raises (see :mod:`nbest.engines._openai_wire`)."""


class EndpointFailure(Exception):
    """The endpoint (not the request) failed: a wrong answer (HTTP 429/5xx, not an
    OpenAI response). A strike; the request goes elsewhere."""


class ConnectionFailure(EndpointFailure):
    """The endpoint's connection failed: refused, reset, or silent for ``read_timeout``.
    The endpoint is marked down at once."""


class _Rejected(Exception):
    """HTTP 4xx: the request, or the endpoint, is at fault."""


@dataclass
class _Attempt:
    """One try of a candidate on one endpoint: the state that the failover loop,
    the readers and ``abort`` share, so an abort or a failed endpoint can end it."""

    endpoint: Endpoint
    scope: anyio.CancelScope
    """Cancelled to end the attempt (abort, or its endpoint failed under another request).
    A token stream enters a fresh scope for every wait, never across a yield."""
    moved: bool = False
    aborted: bool = False
    response: httpx.Response | None = None
    """A token stream's open response, closed by :meth:`~nbest.engines.openai.OpenAIEngine.abort` between reads."""
    reading: bool = False
    """A token stream is waiting for bytes (the scope ends that wait)."""


class AnswerReading:
    """The readers of :class:`~nbest.engines.openai.OpenAIEngine`, which inherits them.

    They live apart from the failover loop that drives them (``generate``) so
    that reading an answer and deciding where it goes next are each one idea;
    they use the engine's client and timeouts, declared here. ``_read`` also
    bounds the engine's probe (``GET /models``).
    """

    name: str
    request_timeout: float
    read_timeout: float
    connect_timeout: float
    _client: httpx.AsyncClient | None

    async def _answer(
        self,
        attempt: _Attempt,
        reader: TokenReader,
        url: str,
        body: dict[str, Any],
        deadline: float,
        limit: int,
        *,
        every_token_new: bool,
    ) -> AsyncGenerator[CandidateUpdate, None]:
        """One attempt that reads the answer in one piece (streamed or not): its
        final update (``every_token_new``: with every token in
        ``new_token_logprobs``), or nothing when
        :meth:`~nbest.engines.openai.OpenAIEngine.abort` or a failure of its
        endpoint cancelled ``attempt.scope``.

        Raises:
            ConnectionFailure, EndpointFailure, _Rejected: see :mod:`nbest.engines.openai`.
            GenerationError: past ``deadline``.
        """
        data: dict[str, Any] | None = None
        with attempt.scope:
            data = await self._post(url, body, deadline, limit)
        if data is not None:
            yield _final(data, reader.path, reader.params, every_token_new=every_token_new)

    async def _events(
        self, attempt: _Attempt, reader: TokenReader, url: str, body: dict[str, Any], deadline: float, limit: int
    ) -> AsyncGenerator[CandidateUpdate, None]:
        """One attempt that reads a streamed answer as its bytes arrive: a partial
        update for every chunk that brings tokens, then the final update;
        nothing more once :meth:`~nbest.engines.openai.OpenAIEngine.abort` or a
        failure of its endpoint ended a wait.

        No cancel scope is open while an update is yielded (the consumer runs
        then): every wait for bytes enters its own scope (see :meth:`_step`).

        Raises:
            ConnectionFailure, EndpointFailure, _Rejected: see :mod:`nbest.engines.openai`.
            GenerationError: past ``deadline``.
        """
        response = await self._step(attempt, self._open(url, body), deadline)
        if response is None:
            return
        attempt.response = response  # closed by generate, or by abort between reads
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # a server that does not stream: the whole answer, every token new in it
            raw = await self._step(attempt, self._read(response, limit), deadline)
            if raw is not None:
                yield _final(_parse(raw, ""), reader.path, reader.params, every_token_new=True)
            return
        chunks = response.aiter_bytes()
        size = 0
        while (chunk := await self._step(attempt, anext(chunks, b""), deadline)) is not None:
            if not chunk:
                yield self._whole(reader)
                return
            size += len(chunk)
            if size > limit:
                raise EndpointFailure(f"answer longer than {limit} bytes")
            for update in self._partial(reader, chunk):
                yield update
            if reader.events.done:
                yield self._whole(reader)
                return

    async def _open(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """Send ``body``; the 200 response with its body unread.

        Raises:
            EndpointFailure, _Rejected: another status (its body read and closed).
        """
        client = self._client
        if client is None:
            raise EngineError(f"engine {self.name} is closed", engine=self.name)
        response = await client.send(client.build_request("POST", url, json=body), stream=True)
        if response.status_code == 200:
            return response
        try:
            raw = await self._read(response, ERROR_BODY_BYTES)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                await response.aclose()
        raise _refusal(response.status_code, raw)

    async def _step(self, attempt: _Attempt, wait: Awaitable[T], deadline: float) -> T | None:
        """One wait of a token stream, bounded by ``read_timeout`` and the deadline;
        None when :meth:`~nbest.engines.openai.OpenAIEngine.abort` or a failure
        of its endpoint ended it (the attempt says which).

        Raises:
            ConnectionFailure: no bytes for ``read_timeout``, or the connection failed.
            GenerationError: past the deadline.
        """
        if attempt.aborted or attempt.moved:
            if isinstance(wait, Coroutine):
                wait.close()
            return None
        left = deadline - anyio.current_time()
        attempt.reading = True
        try:
            with anyio.CancelScope() as scope:
                attempt.scope = scope
                with anyio.fail_after(max(min(self.read_timeout, left), 0.0)):
                    return await wait
        except TimeoutError as exc:
            if left <= self.read_timeout:
                raise GenerationError(
                    f"no complete answer within request_timeout={self.request_timeout:g} s", engine=self.name
                ) from None
            raise ConnectionFailure(f"no answer for read_timeout={self.read_timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ConnectionFailure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        finally:
            attempt.reading = False
        return None

    @staticmethod
    def _partial(reader: TokenReader, chunk: bytes) -> list[CandidateUpdate]:
        try:
            return reader.feed(chunk)
        except MALFORMED as exc:
            raise EndpointFailure(f"not an OpenAI response ({exc})") from None

    @staticmethod
    def _whole(reader: TokenReader) -> CandidateUpdate:
        try:
            return reader.final()
        except MALFORMED as exc:
            raise EndpointFailure(f"not an OpenAI response ({exc})") from None

    async def _post(self, url: str, body: dict[str, Any], deadline: float, limit: int) -> dict[str, Any]:
        """The answer to ``body`` read whole, as a non-streamed OpenAI response.

        Raises:
            ConnectionFailure, EndpointFailure, _Rejected: see :mod:`nbest.engines.openai`.
            GenerationError: past ``deadline``.
        """
        client = self._client
        if client is None:
            raise EngineError(f"engine {self.name} is closed", engine=self.name)
        with anyio.move_on_after(deadline - anyio.current_time()):
            try:
                return await self._exchange(client, url, body, limit)
            except TimeoutError as exc:
                raise ConnectionFailure(f"no answer for read_timeout={self.read_timeout:g} s") from exc
            except httpx.HTTPError as exc:
                raise ConnectionFailure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        raise GenerationError(f"{url}: no complete answer within request_timeout={self.request_timeout:g} s", engine=self.name)

    async def _exchange(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], limit: int) -> dict[str, Any]:
        """Send ``body``, read the answer (each wait bounded by ``read_timeout``) and parse it."""
        request = client.build_request("POST", url, json=body)
        with anyio.fail_after(self.read_timeout):
            response = await client.send(request, stream=True)
        try:
            status = response.status_code
            raw = await self._read(response, limit if status == 200 else ERROR_BODY_BYTES)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                await response.aclose()  # also when cancelled: the connection is closed, the server aborts
        if status == 200:
            return _parse(raw, response.headers.get("content-type", ""))
        raise _refusal(status, raw)

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        """The body, up to ``limit`` bytes (an error body is cut there; a longer answer is a failure)."""
        parts: list[bytes] = []
        size = 0
        chunks = response.aiter_bytes()
        while True:
            with anyio.fail_after(self.read_timeout):
                chunk = await anext(chunks, None)
            if chunk is None:
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                if response.status_code != 200:
                    return b"".join(parts)[:limit]
                raise EndpointFailure(f"answer longer than {limit} bytes")


def _response_limit(params: SamplingParams) -> int:
    """Most bytes an answer to ``params`` may take (generous: ~2 KiB per token and alternative)."""
    return 1_048_576 + params.max_tokens * (params.top_logprobs + 1) * 2048


def _parse(raw: bytes, content_type: str) -> dict[str, Any]:
    """A 200 answer (server-sent events, or one JSON response from a server that
    does not stream) as a non-streamed OpenAI response.

    Raises:
        EndpointFailure: not an OpenAI response, no choice, an error event, or a
            stream that ended before its last choice.
    """
    text = raw.decode("utf-8", "replace")
    try:
        if "text/event-stream" in content_type or text.lstrip().startswith("data:"):
            data = merge_events(text)
        else:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
                raise ValueError("no choices")
            if not isinstance(data["choices"][0], dict):
                raise ValueError("a choice is not an object")
    except MALFORMED as exc:
        raise EndpointFailure(f"not an OpenAI response ({exc}): {text[:200]!r}") from None
    return data


def _final(data: dict[str, Any], path: str, params: SamplingParams, *, every_token_new: bool) -> CandidateUpdate:
    """The final update of a whole answer (``every_token_new``: each token also in
    ``new_token_logprobs``, as when no partial update reported it).

    Raises:
        EndpointFailure: malformed log-probabilities (the answer is the endpoint's
            failure, as a malformed stream is).
    """
    try:
        update = final_update(data, path, params)
    except MALFORMED as exc:
        raise EndpointFailure(f"not an OpenAI response ({exc})") from None
    if every_token_new:
        return update.model_copy(update={"new_token_logprobs": update.token_logprobs, "new_top_logprobs": update.top_logprobs})
    return update


def _refusal(status: int, raw: bytes) -> EndpointFailure | _Rejected:
    """What an answer other than 200 means: a 4xx (but 429) may be the request's
    fault (:class:`_Rejected`); any other is the endpoint's."""
    message = f"HTTP {status}: {error_message(raw)}"
    if 400 <= status < 500 and status != 429:
        return _Rejected(message)
    return EndpointFailure(message)
