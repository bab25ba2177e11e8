"""Embedding rerankers: exact values with fixed vectors, errors, and the real offline model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from nbest.errors import ConfigError, RerankerError
from nbest.rerankers import (
    MBR,
    Embedder,
    EmbeddingConsensus,
    MeanLogProb,
    NearDuplicates,
    Ranker,
    SourceSimilarity,
    default_embedding_model,
    parse_spec,
)
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams

REQUEST = Request(prompt="q", source="le chat")


class FixedEmbedder(Embedder):
    """Looks texts up in a table of unit vectors; counts calls to show batching."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__()
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.calls: list[list[str]] = []

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts])


TABLE = {"a": [1.0, 0.0], "a2": [1.0, 0.0], "b": [0.0, 1.0], "ab": [1.0, 1.0], "le chat": [1.0, 0.0]}


def cands(texts: list[str], confidences: list[float] | None = None) -> list[Candidate]:
    confidences = confidences or [None] * len(texts)  # type: ignore[list-item]
    return [
        Candidate(index=i, spec=CandidateSpec(index=i, params=SamplingParams()), text=t, confidence=c)
        for i, (t, c) in enumerate(zip(texts, confidences, strict=True))
    ]


@pytest.mark.asyncio
async def test_consensus_is_mean_cosine_to_others_in_one_batch() -> None:
    embedder = FixedEmbedder(TABLE)
    scores = await EmbeddingConsensus(embedder).score(REQUEST, cands(["a", "a2", "b", "ab"]))
    h = 1 / np.sqrt(2)
    expected = [(1 + 0 + h) / 3, (1 + 0 + h) / 3, (0 + 0 + h) / 3, (h + h + h) / 3]
    assert [s.value for s in scores] == pytest.approx(expected, abs=1e-6)
    assert embedder.calls == [["a", "a2", "b", "ab"]]


@pytest.mark.asyncio
async def test_consensus_single_and_empty() -> None:
    reranker = EmbeddingConsensus(FixedEmbedder(TABLE))
    assert [s.value for s in await reranker.score(REQUEST, cands(["a"]))] == [None]
    assert await reranker.score(REQUEST, []) == []


@pytest.mark.asyncio
async def test_mbr_embedding_equals_consensus_for_both_methods() -> None:
    embedder = FixedEmbedder(TABLE)
    texts = cands(["a", "b", "ab", "a2"])
    consensus = [s.value for s in await EmbeddingConsensus(embedder).score(REQUEST, texts)]
    for method in ("exact", "aggregate"):
        mbr = [s.value for s in await MBR("embedding", method=method, model=embedder).score(REQUEST, texts)]  # type: ignore[arg-type]
        assert mbr == pytest.approx(consensus, abs=1e-6)


@pytest.mark.asyncio
async def test_source_similarity() -> None:
    scores = await SourceSimilarity(FixedEmbedder(TABLE)).score(REQUEST, cands(["a", "b", "ab"]))
    assert [s.value for s in scores] == pytest.approx([1.0, 0.0, 1 / np.sqrt(2)], abs=1e-6)
    with pytest.raises(RerankerError, match="source"):
        await SourceSimilarity(FixedEmbedder(TABLE)).score(Request(prompt="q"), cands(["a"]))


@pytest.mark.asyncio
async def test_near_duplicates_group_by_similarity() -> None:
    grouper = NearDuplicates(FixedEmbedder(TABLE), threshold=0.95)
    answers = await grouper.group(REQUEST, cands(["a", "b", "a2", "ab"], [0.4, 0.3, 0.2, 0.1]))
    got = [(a.answer, round(a.confidence, 6), a.support) for a in answers]
    assert got == [("a", 0.6, [0, 2]), ("b", 0.3, [1]), ("ab", 0.1, [3])]
    loose = await NearDuplicates(FixedEmbedder(TABLE), threshold=0.7).group(REQUEST, cands(["a", "ab", "b"], [0.5, 0.3, 0.2]))
    assert [a.support for a in loose] == [[0, 1], [2]]


@pytest.mark.asyncio
async def test_ranker_uses_near_duplicate_grouping() -> None:
    cs = cands(["a", "a2", "b"])
    for c, lp in zip(cs, [-1.0, -1.0, -0.5], strict=True):
        c.mean_logprob = lp
    ranked = await Ranker([MeanLogProb()], group=NearDuplicates(FixedEmbedder(TABLE))).rank(REQUEST, cs)
    assert sorted(a.support for a in ranked.answers) == [[0, 1], [2]]


def test_bad_models_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no model folder"):
        EmbeddingConsensus("/no/such/folder")
    with pytest.raises(ConfigError, match="not a model folder"):
        EmbeddingConsensus(str(tmp_path))
    with pytest.raises(ConfigError, match="threshold"):
        NearDuplicates(threshold=1.5)
    (tmp_path / "config.json").write_text("{}")
    broken = Embedder(str(tmp_path))
    with pytest.raises(ConfigError, match="cannot load"):
        broken.load()


@pytest.mark.asyncio
async def test_unloadable_model_is_recorded_as_a_reranker_failure(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    ranked = await Ranker([EmbeddingConsensus(str(tmp_path)), MeanLogProb()]).rank(REQUEST, cands(["a", "b"]))
    assert any("embed failed" in w and "cannot load" in w for w in ranked.warnings)
    assert len(ranked.candidates) == 2


def test_cli_short_form() -> None:
    reranker, weight = parse_spec("embed=0.5")
    assert isinstance(reranker, EmbeddingConsensus)
    assert reranker.embedder.model == default_embedding_model()
    assert weight == 0.5


@pytest.mark.slow
@pytest.mark.asyncio
async def test_real_model_prefers_the_consensus_answer(minilm: Embedder) -> None:
    texts = [
        "The capital of France is Paris.",
        "Paris is the capital of France.",
        "It's Paris.",
        "Bananas are rich in potassium.",
    ]
    scores = [s.value or 0.0 for s in await EmbeddingConsensus(minilm).score(REQUEST, cands(texts))]
    assert scores.index(min(scores)) == 3
    assert all(-1.0 <= s <= 1.0 for s in scores)
    answers = await NearDuplicates(minilm, threshold=0.8).group(REQUEST, cands(texts, [0.4, 0.3, 0.2, 0.1]))
    assert [3] in [a.support for a in answers]
    assert any({0, 1} <= set(a.support) for a in answers)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_real_model_source_similarity_and_mbr(minilm: Embedder) -> None:
    request = Request(prompt="Paraphrase", source="The weather is lovely today.")
    texts = ["Today the weather is beautiful.", "I lost my keys at the station."]
    sim = [s.value or 0.0 for s in await SourceSimilarity(minilm).score(request, cands(texts))]
    assert sim[0] > sim[1]
    mbr = await MBR("embedding", model=minilm).score(request, cands(texts))
    assert mbr[0].value == pytest.approx(mbr[1].value, abs=1e-6)  # two candidates: symmetric
