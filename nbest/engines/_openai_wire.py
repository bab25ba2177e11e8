"""The OpenAI completions wire format, read for :class:`~nbest.engines.openai.OpenAIEngine`.

One reading of the per-token log-probabilities serves whole answers and
streamed ones: :class:`Events` merges server-sent chunks into one non-streamed
response, :func:`final_update` turns a response into the final
CandidateUpdate, and :class:`TokenReader` turns the chunks, as they arrive,
into partial updates holding each token's log-probabilities exactly once,
converted by the same functions (so its final update equals the one the whole
answer gives).

Everything here reads what a server sent: a malformed answer raises
``ValueError`` (or ``TypeError`` / ``KeyError`` / ``RecursionError``), which the
engine's readers (:mod:`nbest.engines._openai_read`) report as the endpoint's
failure. How much is read is bounded by the caller (the engine's byte limit);
:class:`TokenReader` also refuses more tokens than ``max_tokens``.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Sequence
from typing import Any

from nbest.engines._tokens import alternatives
from nbest.types import CandidateUpdate, SamplingParams

__all__ = ["Events", "TokenReader", "error_message", "final_update", "merge_events"]

CHAT = "/chat/completions"


def error_message(raw: bytes) -> str:
    """The error message of an OpenAI-style error body, or the start of the body."""
    text = raw.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error", {})
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:500]
    except (ValueError, AttributeError, RecursionError):
        pass
    return text[:200]


class Events:
    """Server-sent completion chunks, fed one ``data:`` payload at a time, merged
    into one non-streamed response (:meth:`merged`).

    The per-token log-probabilities grow in :attr:`content` (chat) or
    :attr:`token_logprobs` / :attr:`tokens` / :attr:`top` (completions), so a
    reader can convert each new position as it arrives.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.chat = False
        self.finish: str | None = None
        self.done = False
        """``[DONE]`` came."""
        self.seen = False
        self.usage: dict[str, Any] | None = None
        self.tokens: list[Any] = []
        self.token_logprobs: list[Any] = []
        self.top: list[Any] = []
        self.content: list[Any] = []
        self.has_logprobs = False

    def feed(self, payload: str) -> str:
        """Add one event; returns the text it brings.

        Raises:
            ValueError: not JSON, not an object, or an error event.
        """
        if payload == "[DONE]":
            self.done = True
            return ""
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ValueError("an event is not an object")
        if event.get("error"):
            raise ValueError(f"error event: {error_message(payload.encode())}")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        new: list[str] = []
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.seen = True
            if "delta" in choice:
                self.chat = True
                new.append(str((choice.get("delta") or {}).get("content") or ""))
            else:
                new.append(str(choice.get("text") or ""))
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                self.has_logprobs = True
                self.content.extend(logprobs.get("content") or ())
                self.tokens.extend(logprobs.get("tokens") or ())
                self.token_logprobs.extend(logprobs.get("token_logprobs") or ())
                self.top.extend(logprobs.get("top_logprobs") or ())
            self.finish = choice.get("finish_reason") or self.finish
        text = "".join(new)
        self.texts.append(text)
        return text

    @property
    def complete(self) -> bool:
        """A finish reason or ``[DONE]`` came: the answer is whole."""
        return self.finish is not None or self.done

    def merged(self) -> dict[str, Any]:
        """The chunks so far as one non-streamed response.

        Raises:
            ValueError: no choice came, or the stream ended before a finish reason or ``[DONE]``.
        """
        if not self.seen:
            raise ValueError("no choices")
        if not self.complete:
            raise ValueError("the stream ended before its last choice")
        merged: dict[str, Any]
        if self.chat:
            merged = {"message": {"content": "".join(self.texts)}, "finish_reason": self.finish}
            merged["logprobs"] = {"content": self.content} if self.has_logprobs else None
        else:
            merged = {"text": "".join(self.texts), "finish_reason": self.finish}
            lists = {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top}
            merged["logprobs"] = lists if self.has_logprobs else None
        data: dict[str, Any] = {"choices": [merged]}
        if self.usage is not None:
            data["usage"] = self.usage
        return data


def merge_events(text: str) -> dict[str, Any]:
    """Server-sent completion chunks merged into one non-streamed response.

    >>> chunks = ['{"choices": [{"index": 0, "text": "Hel", "finish_reason": null}]}',
    ...           '{"choices": [{"index": 0, "text": "lo", "finish_reason": "stop"}]}',
    ...           '{"choices": [], "usage": {"completion_tokens": 2}}', '[DONE]']
    >>> merge_events("".join(f"data: {chunk}\\n\\n" for chunk in chunks))
    {'choices': [{'text': 'Hello', 'finish_reason': 'stop', 'logprobs': None}], 'usage': {'completion_tokens': 2}}

    Raises:
        ValueError: an event is not JSON or is an error, no choice came, or the
            stream ended before a finish reason or ``[DONE]``.
    """
    events = Events()
    for line in text.splitlines():
        if line.startswith("data:"):
            events.feed(line[5:].strip())
            if events.done:
                break
    return events.merged()


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"a log-probability is {number}")
    return number


def chat_positions(content: Sequence[Any], top: bool) -> tuple[list[float], list[dict[str, float]] | None]:
    """Each token's log-probability and (``top``) alternatives from chat ``logprobs.content`` items.

    The sampled token is among its alternatives (as in ``VLLMEngine``); two
    alternatives with the same text keep the more likely one
    (:func:`nbest.engines._tokens.alternatives`).

    >>> chat_positions([{"token": "Paris", "logprob": -0.1, "top_logprobs": [{"token": "Lyon", "logprob": -2.5}]}], True)
    ([-0.1], [{'Paris': -0.1, 'Lyon': -2.5}])
    """
    values: list[float] = []
    alts: list[dict[str, float]] | None = [] if top else None
    for item in content:
        value = _finite(item["logprob"])
        values.append(value)
        if alts is not None:
            others = ((str(a["token"]), _finite(a["logprob"])) for a in item.get("top_logprobs") or ())
            alts.append(alternatives(str(item["token"]), value, others))
    return values, alts


def completion_positions(
    tokens: Sequence[Any], token_logprobs: Sequence[Any], top_logprobs: Sequence[Any], top: bool, start: int = 0
) -> tuple[list[float], list[dict[str, float]] | None]:
    """Each token's log-probability and (``top``) alternatives from completions
    ``logprobs`` lists, from position ``start`` on. A position without a
    log-probability (``null``: a prompt token echoed back) is left out of both lists.

    >>> completion_positions([" 4"], [-0.2], [{" 4": -0.2, " 5": -1.9}], True)
    ([-0.2], [{' 4': -0.2, ' 5': -1.9}])
    """
    values: list[float] = []
    alts: list[dict[str, float]] | None = [] if top else None
    for i in range(start, len(token_logprobs)):
        if token_logprobs[i] is None:
            continue
        value = _finite(token_logprobs[i])
        values.append(value)
        if alts is not None:
            token = str(tokens[i]) if i < len(tokens) else ""
            others = (top_logprobs[i] if i < len(top_logprobs) else None) or {}
            alts.append(alternatives(token, value, ((str(k), _finite(v)) for k, v in others.items())))
    return values, alts


def final_update(data: dict[str, Any], path: str, params: SamplingParams) -> CandidateUpdate:
    """The final CandidateUpdate of an OpenAI (chat) completion response."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    top = params.top_logprobs > 0
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    logprobs = choice.get("logprobs")
    if path == CHAT:
        text = (choice.get("message") or {}).get("content") or ""
        content = (logprobs or {}).get("content")
        if content is not None:
            token_logprobs, top_logprobs = chat_positions(content, top)
    else:
        text = choice.get("text") or ""
        if logprobs is not None and logprobs.get("token_logprobs") is not None:
            lists = (logprobs.get("tokens") or (), logprobs["token_logprobs"], logprobs.get("top_logprobs") or ())
            token_logprobs, top_logprobs = completion_positions(*lists, top)
    num_tokens = usage.get("completion_tokens")
    if num_tokens is None:
        num_tokens = len(token_logprobs or ())
    return CandidateUpdate(
        text=text,
        num_tokens=int(num_tokens),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cumulative_logprob=math.fsum(token_logprobs) if token_logprobs is not None else None,
        token_logprobs=token_logprobs,
        top_logprobs=top_logprobs,
        finish_reason=choice.get("finish_reason"),
        finished=True,
    )


class TokenReader:
    """One streamed answer (server-sent events), read as its bytes arrive.

    :meth:`feed` takes the bytes as they come and returns a partial update for
    every event that brought text or tokens: the text so far, the tokens so
    far, and the log-probabilities of the event's new tokens (with their
    alternatives when ``params.top_logprobs`` > 0). :meth:`final` is the last
    update, the same as :func:`final_update` of the whole answer, holding the
    tokens that no partial update reported (none when every event was read).

    Work is O(1) per token (O(k) with k alternatives) plus the text so far,
    copied once per event. Bytes are bounded by the caller.

    >>> reader = TokenReader("/completions", SamplingParams(max_tokens=4))
    >>> events = [{"choices": [{"index": 0, "text": "Hi", "logprobs": {"tokens": ["Hi"], "token_logprobs": [-0.5]}}]},
    ...           {"choices": [{"index": 0, "text": "!", "logprobs": {"tokens": ["!"], "token_logprobs": [-0.25]},
    ...                         "finish_reason": "stop"}]}]
    >>> raw = "".join(f"data: {json.dumps(e)}\\n\\n" for e in events) + "data: [DONE]\\n\\n"
    >>> [(u.text, u.num_tokens, u.new_token_logprobs) for u in reader.feed(raw.encode())]
    [('Hi', 1, [-0.5]), ('Hi!', 2, [-0.25])]
    >>> final = reader.final()
    >>> final.text, final.token_logprobs, final.cumulative_logprob, final.new_token_logprobs
    ('Hi!', [-0.5, -0.25], -0.75, [])
    """

    def __init__(self, path: str, params: SamplingParams) -> None:
        self.path = path
        self.params = params
        self.events = Events()
        self.text = ""
        self.tokens = 0
        """Tokens reported so far."""
        self.cumulative_logprob = 0.0
        self._top = params.top_logprobs > 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._line = ""
        self._read = 0  # positions of the raw logprob lists already converted

    def feed(self, chunk: bytes) -> list[CandidateUpdate]:
        """Partial updates for the complete events in ``chunk`` (and what came before it).

        Raises:
            ValueError: a malformed event, or more tokens than ``max_tokens``.
        """
        lines = (self._line + self._decoder.decode(chunk)).split("\n")
        self._line = lines.pop()
        updates: list[CandidateUpdate] = []
        for line in lines:
            if self.events.done or not line.startswith("data:"):
                continue
            text = self.events.feed(line[5:].strip())
            new, new_top = self._new_positions()
            if text or new:
                self.text += text
                self.tokens += len(new)
                self.cumulative_logprob += sum(new)
                updates.append(
                    CandidateUpdate(
                        text=self.text,
                        num_tokens=self.tokens,
                        cumulative_logprob=self.cumulative_logprob,
                        new_token_logprobs=new,
                        new_top_logprobs=new_top,
                    )
                )
        return updates

    def _new_positions(self) -> tuple[list[float], list[dict[str, float]] | None]:
        events = self.events
        if events.chat:
            new = events.content[self._read :]
            self._read = len(events.content)
            values, alts = chat_positions(new, self._top)
        else:
            values, alts = completion_positions(events.tokens, events.token_logprobs, events.top, self._top, self._read)
            self._read = len(events.token_logprobs)
        if self.tokens + len(values) > self.params.max_tokens:
            raise ValueError(f"more tokens than max_tokens={self.params.max_tokens}")
        return values, alts

    def final(self) -> CandidateUpdate:
        """The final update (see the class docstring).

        Raises:
            ValueError: the answer is not whole (no finish reason, no ``[DONE]``) or malformed.
        """
        reported = self.tokens
        if self._line.startswith("data:") and not self.events.done:  # a last event without its line end
            self.feed(b"\n")
        update = final_update(self.events.merged(), self.path, self.params)
        new = (update.token_logprobs or [])[reported:]
        new_top = (update.top_logprobs or [])[reported:] if update.top_logprobs is not None else None
        return update.model_copy(update={"new_token_logprobs": new, "new_top_logprobs": new_top})
