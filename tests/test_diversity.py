"""Diversity measures on hand-checked texts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nbest import ConfigError
from nbest.metrics.diversity import add_diversity, distinct_n, diversity, embedding_distance, load_embedder, self_bleu, tokenize
from nbest.types import Candidate, CandidateSpec, Diversity, Result, SamplingParams


@pytest.mark.parametrize(
    ("texts", "d1", "d2"),
    [
        # the cat sat | the cat ran: 4 distinct of 6 words; bigrams the-cat x2, cat-sat, cat-ran: 3 of 4
        (["the cat sat", "the cat ran"], 4 / 6, 3 / 4),
        # a b a b: 2 of 4 words; bigrams ab, ba, ab: 2 of 3
        (["a b a b"], 2 / 4, 2 / 3),
        # punctuation is a token, case is folded: hello , world ! | hello world
        (["Hello, world!", "hello world"], 4 / 6, 4 / 4),
        # identical texts: nothing new in the second one
        (["one two three", "one two three"], 3 / 6, 2 / 4),
        # one word each: no bigrams at all
        (["a", "a"], 1 / 2, 0.0),
        ([], 0.0, 0.0),
        ([""], 0.0, 0.0),
    ],
)
def test_distinct_n(texts: list[str], d1: float, d2: float) -> None:
    assert distinct_n(texts, 1) == pytest.approx(d1)
    assert distinct_n(texts, 2) == pytest.approx(d2)


def test_tokenize() -> None:
    assert tokenize("It's 3.5 km, OK?") == ["it", "'", "s", "3", ".", "5", "km", ",", "ok", "?"]


def test_distinct_n_needs_positive_n() -> None:
    with pytest.raises(ConfigError, match="n: must be at least 1"):
        distinct_n(["a"], 0)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["the same four words", "the same four words"], 100.0),
        (["alpha beta gamma delta", "one two three four"], 0.0),
        # 4 tokens each, 3/4 unigrams, 2/3 bigrams, 1/2 trigrams and 0/1 4-grams match; exp smoothing
        # turns the 0/1 into 1/2; same length, no brevity penalty: (3/4 * 2/3 * 1/2 * 1/2) ** (1/4)
        (["a b c d", "a b c e"], 100 * (3 / 4 * 2 / 3 * 1 / 2 * 1 / 2) ** 0.25),
        # 3 tokens: only orders 1-3 count (effective order); 2/3, 1/2, 0/1 -> 1/2: (2/3 * 1/2 * 1/2) ** (1/3)
        (["the cat sat", "the cat ran"], 100 * (2 / 3 * 1 / 2 * 1 / 2) ** (1 / 3)),
        (["only one"], None),
        ([], None),
    ],
)
def test_self_bleu(texts: list[str], expected: float | None) -> None:
    got = self_bleu(texts)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_self_bleu_averages_each_text_against_the_others() -> None:
    # the third text shares nothing: it scores 0 and gives the others nothing to match
    texts = ["the same four words", "the same four words", "x y z w"]
    assert self_bleu(texts) == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    ("vectors", "expected"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], 1.0),
        ([[1.0, 0.0], [3.0, 0.0]], 0.0),  # the length of a vector does not matter
        ([[1.0, 0.0], [-1.0, 0.0]], 2.0),
        ([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], 2 / 3),  # pairs: 0, 1, 1
        ([[1.0, 1.0], [1.0, 0.0]], 1 - 1 / 2**0.5),
        ([[0.0, 0.0], [1.0, 0.0]], 1.0),  # a zero vector counts as orthogonal
    ],
)
def test_embedding_distance_with_a_callable(vectors: list[list[float]], expected: float) -> None:
    texts = [f"t{i}" for i in range(len(vectors))]
    seen: list[list[str]] = []

    def embed(batch: list[str]) -> list[list[float]]:
        seen.append(batch)
        return vectors

    assert embedding_distance(texts, embed) == pytest.approx(expected)
    assert seen == [texts]  # one batched call


def test_embedding_distance_with_an_encode_method() -> None:
    class Model:
        def encode(self, texts: list[str]) -> np.ndarray:
            return np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])

    d = diversity(["a cat", "the cat", "a dog"], embedder=Model())
    assert d.embedding_distance == pytest.approx(2 / 3)
    assert diversity(["a cat"], embedder=Model()).embedding_distance is None


def test_embedder_with_the_wrong_shape() -> None:
    with pytest.raises(ConfigError, match="expected one vector per text \\(3\\)"):
        embedding_distance(["a", "b", "c"], lambda texts: [[1.0], [2.0]])
    with pytest.raises(ConfigError, match="give a sentence-transformers model or a callable"):
        embedding_distance(["a", "b"], 42)


def test_diversity_without_an_embedder() -> None:
    assert diversity(["the cat sat", "the cat ran"]) == Diversity(
        distinct_1=4 / 6, distinct_2=3 / 4, self_bleu=round(100 * (1 / 6) ** (1 / 3), 10), embedding_distance=None
    )
    assert diversity([]) == Diversity(distinct_1=0.0, distinct_2=0.0)


def _candidate(index: int, text: str, error: str | None = None) -> Candidate:
    spec = CandidateSpec(index=index, params=SamplingParams(seed=index))
    return Candidate(index=index, text=text, spec=spec, error=error)


@pytest.mark.asyncio
async def test_add_diversity_measures_the_successful_candidates() -> None:
    candidates = [_candidate(1, "the cat ran"), _candidate(2, "", error="boom"), _candidate(0, "the cat sat")]
    result = Result(id="r", prompt="Why?", n=3, candidates=candidates, best=candidates[0])
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> Any:
        calls.append(texts)
        return [[1.0, 0.0], [0.0, 1.0]]

    filled = await add_diversity(result, embedder=embed)
    assert result.diversity is None  # the original is left alone
    assert calls == [["the cat sat", "the cat ran"]]  # plan order, failures left out
    assert filled.diversity == Diversity(
        distinct_1=4 / 6, distinct_2=3 / 4, self_bleu=round(100 * (1 / 6) ** (1 / 3), 10), embedding_distance=1.0
    )
    assert filled.candidates == result.candidates


@pytest.mark.slow
def test_embedded_embedder_is_offline_and_separates_meanings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_embedder()
    close = embedding_distance(["The cat sat on the mat.", "A cat was sitting on the mat."], model)
    far = embedding_distance(["The cat sat on the mat.", "Stock markets fell sharply today."], model)
    assert close is not None and far is not None
    assert 0.0 <= close < 0.3 < 0.7 < far
    same = diversity(["The cat sat on the mat."] * 3, embedder=model)
    assert same.embedding_distance == pytest.approx(0.0, abs=1e-6)
    assert same.self_bleu == pytest.approx(100.0)
