"""MBR: exact choice equals a direct sacrebleu computation; aggregation agrees where it must."""

from __future__ import annotations

import random

import pytest
import sacrebleu

from nbest.errors import ConfigError
from nbest.rerankers import MBR, parse_spec
from nbest.rerankers.mbr import bleu_matrix, chrf_matrix, mbr_scores
from nbest.types import Candidate, CandidateSpec, Request, SamplingParams

REQUEST = Request(prompt="Translate: Le chat est assis sur le tapis.")
TRANSLATIONS = [
    "The cat is sitting on the mat.",
    "The cat sits on the mat.",
    "A cat is seated on the carpet.",
    "The dog is sitting on the mat.",
    "Cat mat sit.",
]


def cands(texts: list[str]) -> list[Candidate]:
    return [Candidate(index=i, spec=CandidateSpec(index=i, params=SamplingParams()), text=t) for i, t in enumerate(texts)]


def random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "quickly", ",", ".", "house", "red", "blue"]
    return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]


def variants(seed: int, n: int) -> list[str]:
    """Noisy copies of one sentence (words dropped or replaced), like sampled translations."""
    rng = random.Random(seed)
    base = ["the", "old", "man", "walked", "slowly", "to", "the", "market", "to", "buy", "fresh", "bread", "and", "milk"]
    out = []
    for _ in range(n):
        words = list(base)
        for _ in range(rng.randint(0, 4)):
            i = rng.randrange(len(words))
            if rng.random() < 0.5:
                del words[i]
            else:
                words[i] = rng.choice(["a", "young", "ran", "store", "cheese", "quickly", "big"])
        out.append(" ".join(words))
    return out


def direct_mbr(texts: list[str], metric: str) -> list[float]:
    score = sacrebleu.sentence_chrf if metric == "chrf" else sacrebleu.sentence_bleu
    n = len(texts)
    return [sum(score(texts[i], [texts[j]]).score for j in range(n) if j != i) / (n - 1) for i in range(n)]


@pytest.mark.asyncio
@pytest.mark.parametrize("utility", ["chrf", "bleu"])
async def test_exact_mbr_equals_direct_sacrebleu(utility: str) -> None:
    scores = await MBR(utility).score(REQUEST, cands(TRANSLATIONS))  # type: ignore[arg-type]
    expected = direct_mbr(TRANSLATIONS, utility)
    assert [s.value for s in scores] == pytest.approx(expected, abs=1e-8)
    values = [s.value or 0.0 for s in scores]
    assert values.index(max(values)) == expected.index(max(expected))


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_matrices_equal_sacrebleu(seed: int) -> None:
    texts = [*random_texts(seed, 8), "", "x"]
    cm, bm = chrf_matrix(texts), bleu_matrix(texts)
    for i, hyp in enumerate(texts):
        for j, ref in enumerate(texts):
            assert cm[i][j] == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score, abs=1e-9)
            assert bm[i][j] == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score, abs=1e-9)


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
@pytest.mark.parametrize(
    ("texts", "agree"),
    [
        (["the cat sat on the mat", "a cat sat on a mat"], [0, 1]),  # two candidates: one reference each
        (["same words here", "same words here", "same words here"], [0, 1, 2]),
        (["the cat sat", "a dog ran", "a dog ran", "a dog ran"], [0]),  # its references are all identical
        (["red house", "the cat sat", "the cat sat"], [0]),
    ],
)
def test_aggregate_equals_exact_where_they_must(utility: str, texts: list[str], agree: list[int]) -> None:
    exact = mbr_scores(texts, utility, "exact")  # type: ignore[arg-type]
    aggregate = mbr_scores(texts, utility, "aggregate")  # type: ignore[arg-type]
    assert [aggregate[i] for i in agree] == pytest.approx([exact[i] for i in agree], abs=1e-9)


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
@pytest.mark.parametrize("seed", range(4))
def test_aggregate_choice_is_near_the_top_of_exact(utility: str, seed: int) -> None:
    texts = variants(seed, 16)
    exact = mbr_scores(texts, utility, "exact")  # type: ignore[arg-type]
    aggregate = mbr_scores(texts, utility, "aggregate")  # type: ignore[arg-type]
    ex = [e or 0.0 for e in exact]
    ag = [a or 0.0 for a in aggregate]
    top3 = sorted(range(len(ex)), key=lambda i: -ex[i])[:3]
    assert ag.index(max(ag)) in top3


@pytest.mark.asyncio
async def test_single_candidate_scores_none_and_empty_set() -> None:
    assert [s.value for s in await MBR().score(REQUEST, cands(["alone"]))] == [None]
    assert await MBR(method="aggregate").score(REQUEST, []) == []


def test_bad_mbr_settings() -> None:
    with pytest.raises(ConfigError, match="utility"):
        MBR("meteor")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="method"):
        MBR(method="sampled")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model"):
        MBR("chrf", model="some/model")
    with pytest.raises(ConfigError, match="no model folder"):
        MBR("embedding", model="/nonexistent/model")


@pytest.mark.parametrize(
    ("spec", "name", "method"),
    [
        ("mbr", "mbr_chrf", "exact"),
        ("mbr:chrf", "mbr_chrf", "exact"),
        ("mbr:bleu=2", "mbr_bleu", "exact"),
        ("mbr:chrf:aggregate", "mbr_chrf", "aggregate"),
    ],
)
def test_cli_short_forms(spec: str, name: str, method: str) -> None:
    reranker, _ = parse_spec(spec)
    assert isinstance(reranker, MBR)
    assert (reranker.name, reranker.method) == (name, method)
