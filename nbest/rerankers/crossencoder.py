"""Cross-encoder relevance: a model reads (query, candidate) together and scores the pair.

The query is ``request.source`` when the request has one (translation quality
estimation with a QE cross-encoder), else the prompt (QA relevance with an
MS MARCO-style model). Any sentence-transformers ``CrossEncoder`` name or
folder works; the model loads once, on first use, and scores every pair in
batches off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import anyio.to_thread
from pydantic import Field

from nbest._models import LazyModel
from nbest.errors import ConfigError
from nbest.rerankers.base import CandidateCache, cache_key
from nbest.rerankers.embedding import _require, check_model
from nbest.rerankers.registry import RERANKERS, Generator, RerankerConfig
from nbest.types import Candidate, ChatMessage, Request, Score

__all__ = ["CrossEncoder", "CrossEncoderConfig", "query_text"]


def query_text(request: Request, use: Literal["auto", "prompt", "source"] = "auto") -> str:
    """The text a candidate is judged against: the source (translation) or the prompt.

    For a chat prompt, the last user message.

    >>> query_text(Request(prompt="Translate to French", source="Hello"))
    'Hello'
    """
    if use == "source" or (use == "auto" and request.source is not None):
        if request.source is None:
            raise ConfigError("query: the request has no source", parameter="source")
        return request.source
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    users = [m.content for m in prompt if isinstance(m, ChatMessage) and m.role == "user"]
    return users[-1] if users else prompt[-1].content


class CrossEncoder:
    """Score = the cross-encoder's output for (query, candidate).

    Args:
        model: a sentence-transformers CrossEncoder name or folder.
        query: ``"auto"`` (source if the request has one, else the prompt),
            ``"prompt"`` or ``"source"``.
        batch_size: pairs per forward pass.
        max_length: truncate pairs to this many tokens (None: the model's limit).
        device: torch device; None lets sentence-transformers choose.
        name: the reranker's name (``"cross_encoder"``).

    A model with several output labels is read at its last label (the
    "relevant" / positive class of binary classifiers).

    Raises:
        ConfigError: sentence-transformers missing, a folder that is not a
            model, a bad option; (from :meth:`load`) a model that cannot load.
    """

    def __init__(
        self,
        model: str,
        *,
        query: Literal["auto", "prompt", "source"] = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        name: str = "cross_encoder",
    ) -> None:
        _require("sentence_transformers", "sentence-transformers")
        if query not in ("auto", "prompt", "source"):
            raise ConfigError(f"query: unknown {query!r}; use auto, prompt or source", parameter="query", value=query)
        if batch_size < 1:
            raise ConfigError("batch_size: must be at least 1", parameter="batch_size", value=batch_size)
        self.model = check_model(model)
        self.query: Literal["auto", "prompt", "source"] = query
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.name = name
        self._model = LazyModel("cross-encoder", self.model, self._build)
        self._values: CandidateCache[float] = CandidateCache()

    def to_config(self) -> CrossEncoderConfig:
        """The config that rebuilds this reranker."""
        if self.name != "cross_encoder":
            raise ConfigError("cross: built with a custom name; it has no config", parameter="name")
        return CrossEncoderConfig(
            model=self.model, query=self.query, batch_size=self.batch_size, max_length=self.max_length, device=self.device
        )

    def load(self) -> Any:
        """The loaded sentence-transformers CrossEncoder.

        Raises:
            ConfigError: the model cannot be loaded.
        """
        return self._model.get()

    def _build(self) -> Any:
        from sentence_transformers import CrossEncoder as STCrossEncoder

        return STCrossEncoder(self.model, max_length=self.max_length, device=self.device)

    def predict_sync(self, pairs: list[tuple[str, str]]) -> list[float]:
        """One score per (query, candidate) pair (blocking)."""
        import numpy as np

        if not pairs:
            return []
        raw = np.asarray(
            self.load().predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True),
            dtype=np.float64,
        )
        if raw.ndim == 2:
            raw = raw[:, -1]
        return [float(v) for v in raw.reshape(-1)]

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Score ``candidate`` alone ahead of :meth:`score` (in a worker thread)."""
        key = cache_key(request, candidate)
        if key not in self._values:
            query = query_text(request, self.query)
            (value,) = await anyio.to_thread.run_sync(self.predict_sync, [(query, candidate.text)])
            self._values.put(key, value)

    def release(self, request: Request) -> None:
        """Drop the scores computed ahead for ``request``."""
        self._values.forget(request.id)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        query = query_text(request, self.query)
        values = [self._values.get(cache_key(request, c)) for c in candidates]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            computed = await anyio.to_thread.run_sync(self.predict_sync, [(query, candidates[i].text) for i in missing])
            for i, v in zip(missing, computed, strict=True):
                values[i] = v
        return [Score(value=v) for v in values]


def _name_the_model(kind: str) -> ConfigError:
    return ConfigError(f"--reranker {kind}: name the model, e.g. {kind}:path/to/model", parameter="reranker", value=kind)


@RERANKERS.register("cross")
class CrossEncoderConfig(RerankerConfig):
    """``cross:MODEL``: a cross-encoder's relevance of (query, candidate) (:class:`CrossEncoder`)."""

    kind: Literal["cross"] = "cross"
    model: str
    """A sentence-transformers CrossEncoder name or folder."""
    query: Literal["auto", "prompt", "source"] = "auto"
    """What the candidate is paired with: auto (source if any, else the prompt), prompt or source."""
    batch_size: int = Field(default=32, ge=1)
    """Pairs per forward pass."""
    max_length: int | None = None
    """Truncate pairs to this many tokens (None: the model's limit)."""
    device: str | None = None
    """Torch device; None lets sentence-transformers choose."""

    short_help: ClassVar[str] = "cross:MODEL"

    @classmethod
    def from_short(cls, arg: str) -> Self:
        if not arg:
            raise _name_the_model("cross")
        return cls(model=arg)

    def reranker_name(self) -> str:
        return "cross_encoder"

    def build(self, *, engine: Generator | None = None) -> CrossEncoder:
        return CrossEncoder(
            self.model, query=self.query, batch_size=self.batch_size, max_length=self.max_length, device=self.device
        )
