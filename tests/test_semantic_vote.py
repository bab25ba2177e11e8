"""Votes that count meaning: span and embedding clusters, semantic entropy, clusters in the stopping rules."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import anyio
import numpy as np
import pytest

from nbest import Orchestrator, stopping
from nbest.errors import ConfigError
from nbest.rerankers import Embedder, MajorityVote, Ranker, reranker_config
from nbest.rerankers.cluster import (
    MAX_WORDS,
    answer_entropy,
    embedding_clusters,
    question_text,
    residual,
    semantic_entropy,
    span_clusters,
)
from nbest.types import Answer, Candidate, CandidateSpec, ChatMessage, Request, SamplingParams
from tests.scripted import ScriptedEngine

JAPAN = "What is the capital of Japan?"


def cands(texts: Sequence[str], means: Sequence[float] | None = None) -> list[Candidate]:
    return [
        Candidate(
            index=i,
            spec=CandidateSpec(index=i, params=SamplingParams()),
            text=t,
            num_tokens=4,
            mean_logprob=None if means is None else means[i],
            cumulative_logprob=None if means is None else 4 * means[i],
        )
        for i, t in enumerate(texts)
    ]


def partition(clusters: dict[str, list[int]], texts: Sequence[str]) -> set[frozenset[str]]:
    """The clusters as sets of texts (order-free, for comparing permutations)."""
    return {frozenset(texts[i] for i in members) for members in clusters.values()}


# -- the span rule, by hand
@pytest.mark.parametrize(
    ("texts", "clusters"),
    [
        # residuals {tokyo}, {city, tokyo}, {kyoto}: {tokyo} is minimal and inside {city, tokyo}
        (["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto."], {"tokyo": [0, 1], "it is kyoto": [2]}),
        # no bare "Tokyo": {tokyo} is still the minimal residual of "Tokyo is the capital of Japan."
        (
            ["The capital city of Japan is Tokyo.", "Tokyo is the capital of Japan.", "Japan's capital is Kyoto."],
            {"tokyo is the capital of japan": [0, 1], "japans capital is kyoto": [2]},
        ),
        # "Tokyo, not Kyoto" holds two minimal residuals: it stays apart
        (["Tokyo", "Kyoto", "Tokyo, not Kyoto"], {"tokyo": [0], "kyoto": [1], "tokyo not kyoto": [2]}),
        # an answer that only repeats the question (empty residual) votes for its own text
        (["Japan.", "The capital of Japan.", "Tokyo"], {"japan": [0], "the capital of japan": [1], "tokyo": [2]}),
        # case, accents, punctuation and a plural s do not split a cluster
        (["TOKYO!", "tōkyō", "Tokyo's the capital.", "The capitals: Tokyo"], {"tokyo": [0, 1, 2, 3]}),
        # two minimal residuals with no shared superset: two clusters; {osaka, tokyo} holds both
        (
            ["Tokyo city", "Osaka city", "Tokyo and Osaka"],
            {"tokyo city": [0], "osaka city": [1], "tokyo and osaka": [2]},
        ),
    ],
)
def test_span_clusters_by_hand(texts: list[str], clusters: dict[str, list[int]]) -> None:
    assert span_clusters(JAPAN, texts) == clusters


def test_residual_drops_question_and_function_words() -> None:
    assert residual("The capital city of Japan is Tokyo.", JAPAN) == {"city", "tokyo"}
    assert residual("It is what it is.", JAPAN) == frozenset()
    assert residual("Paris", "") == {"pari"}  # a final s goes, on both sides alike


def test_question_of_a_chat_prompt_is_the_last_user_message() -> None:
    chat = [
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello"),
        ChatMessage(role="user", content=JAPAN),
    ]
    assert question_text(chat) == JAPAN
    assert question_text(JAPAN) == JAPAN


SENTENCES = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto.", "Kyoto, the old capital.", "Tokyo, not Kyoto."]


def test_span_clusters_do_not_depend_on_order() -> None:
    expected = partition(span_clusters(JAPAN, SENTENCES), SENTENCES)
    assert expected == {
        frozenset({"Tokyo.", "The capital city of Japan is Tokyo."}),
        frozenset({"It is Kyoto.", "Kyoto, the old capital."}),
        frozenset({"Tokyo, not Kyoto."}),
    }
    for order in itertools.permutations(SENTENCES):
        clusters = span_clusters(JAPAN, order)
        assert partition(clusters, order) == expected
        assert sorted(clusters) == ["it is kyoto", "tokyo", "tokyo not kyoto"]  # names: the shortest member


@pytest.mark.asyncio
async def test_bounded_work_on_huge_answers() -> None:
    # 64 candidates of 100,000 characters: each read up to MAX_CHARS characters and MAX_WORDS content words
    words = [f"w{i}" for i in range(20_000)]
    texts = [" ".join(words)[:100_000] + f" end{i}" for i in range(64)]  # they differ after 100,000 characters
    assert len(residual(texts[0], JAPAN)) == MAX_WORDS
    with anyio.fail_after(30):  # guards against a hang; the work is milliseconds
        scores = await MajorityVote(extract="text").score(Request(prompt=JAPAN), cands(texts))
    assert len({s.details["answer"] for s in scores}) == 1  # the same first 2,000 characters: one answer
    # distinct long answers sharing nothing: each its own cluster, pairwise checks on 64 distinct sets
    distinct = [" ".join(f"t{i}x{j}" for j in range(15_000)) for i in range(64)]
    with anyio.fail_after(30):
        apart = await MajorityVote(extract="text").score(Request(prompt=JAPAN), cands(distinct))
    assert len({s.details["answer"] for s in apart}) == 64


# -- the vote: free-form answers cluster, extracted ones vote as before
@pytest.mark.asyncio
async def test_default_vote_counts_meaning_on_sentences() -> None:
    texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto.", "The capital of Japan is Kyoto.", "Tokyo!"]
    request = Request(prompt=JAPAN)
    scores = await MajorityVote().score(request, cands(texts))
    assert [s.details["answer"] for s in scores] == ["tokyo", "tokyo", "it is kyoto", "it is kyoto", "tokyo"]
    assert [s.value for s in scores] == [0.6, 0.6, 0.4, 0.4, 0.6]
    plain = await MajorityVote(cluster="none").score(request, cands(texts))
    assert [s.details["answer"] for s in plain] == [
        "tokyo",
        "the capital city of japan is tokyo",
        "it is kyoto",
        "the capital of japan is kyoto",
        "tokyo",
    ]
    assert [s.value for s in plain] == [0.4, 0.2, 0.2, 0.2, 0.4]


@pytest.mark.asyncio
async def test_extracted_answers_are_not_clustered() -> None:
    # numbers and boxed answers vote as extracted; only the whole-text fallback of auto clusters
    texts = ["It is 51.", "51", "\\boxed{52}", "fifty-one", "The answer is fifty-one."]
    scores = await MajorityVote().score(Request(prompt="What is 17 * 3?"), cands(texts))
    assert [s.details["answer"] for s in scores] == ["51", "51", "52", "fiftyone", "fiftyone"]
    numbers = await MajorityVote(extract="number").score(Request(prompt="What is 17 * 3?"), cands(texts))
    assert [s.details["answer"] for s in numbers] == ["51", "51", "52", None, None]
    choice = await MajorityVote(extract="choice").score(Request(prompt="Pick"), cands(["(B)", "The answer is B", "C"]))
    assert [s.details["answer"] for s in choice] == ["b", "b", "c"]


@pytest.mark.asyncio
async def test_first_line_extractor_clusters_its_lines() -> None:
    texts = ["Tokyo\nbecause it is.", "The capital is Tokyo.\nSure.", "Kyoto\n"]
    scores = await MajorityVote(extract="first_line").score(Request(prompt=JAPAN), cands(texts))
    assert [s.details["answer"] for s in scores] == ["tokyo", "tokyo", "kyoto"]


# -- semantic entropy: -sum p log p over the clusters' vote mass
@pytest.mark.asyncio
async def test_semantic_entropy_in_the_details() -> None:
    texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "Tokyo!", "It is Kyoto."]
    scores = await MajorityVote().score(Request(prompt=JAPAN), cands(texts))
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623
    assert [s.details["semantic_entropy"] for s in scores] == pytest.approx([expected] * 4)
    same = await MajorityVote().score(Request(prompt=JAPAN), cands(texts[:3]))
    assert same[0].details["semantic_entropy"] == 0.0


@pytest.mark.asyncio
async def test_semantic_entropy_weighted_by_sequence_probability() -> None:
    # seq_prob weights exp(4 * mean): 0.9^4 for the Tokyo pair each, 0.3^4 for Kyoto (Kuhn et al.'s estimate)
    texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto."]
    means = [math.log(0.9), math.log(0.9), math.log(0.3)]
    scores = await MajorityVote(weight="seq_prob").score(Request(prompt=JAPAN), cands(texts, means))
    a, b = 2 * 0.9**4, 0.3**4
    p, q = a / (a + b), b / (a + b)
    assert scores[0].details["semantic_entropy"] == pytest.approx(-(p * math.log(p) + q * math.log(q)))
    assert scores[0].value == pytest.approx(p)


def test_entropy_helpers_by_hand() -> None:
    assert semantic_entropy({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}) == pytest.approx(math.log(4))
    assert semantic_entropy({"a": 2.0}) == 0.0
    assert semantic_entropy({}) == 0.0
    answers = [Answer(answer="a", confidence=0.25, support=[0]), Answer(answer="b", confidence=0.25, support=[1])]
    assert answer_entropy(answers) == pytest.approx(math.log(2))  # renormalised over the answers


# -- clusters flow into Result.answers and the stopping rules
@pytest.mark.asyncio
async def test_ranker_answers_are_clusters() -> None:
    texts = ["Tokyo.", "The capital city of Japan is Tokyo.", "It is Kyoto.", "Tokyo is the capital."]
    ranked = await Ranker([MajorityVote()]).rank(Request(prompt=JAPAN), cands(texts))
    assert [(a.answer, a.confidence, sorted(a.support)) for a in ranked.answers] == [
        ("tokyo", 0.75, [0, 1, 3]),
        ("it is kyoto", 0.25, [2]),
    ]


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("cluster", "used"),
    [
        ("span", 4),  # four phrasings of Tokyo are four votes for one answer: P = 31/32 >= 0.95
        ("none", 8),  # four different texts per wave: no answer ever leads
    ],
)
async def test_beta_stops_on_clustered_votes(cluster: str, used: int) -> None:
    engine = ScriptedEngine()
    for text in ["Tokyo.", "The capital is Tokyo.", "It's Tokyo!", "Japan's capital city: Tokyo"] * 2:
        engine.enqueue(text)
    async with Orchestrator(engine) as orch:
        result = await orch.generate(
            JAPAN,
            n=8,
            wave=4,
            until=stopping.Beta(0.95),
            rerankers=[MajorityVote(cluster=cluster)],  # type: ignore[arg-type]
        )
    assert result.samples_used == used
    if cluster == "span":
        assert [(a.answer, len(a.support)) for a in result.answers] == [("tokyo", 4)]


@pytest.mark.asyncio(loop_scope="session")
async def test_esc_counts_clusters() -> None:
    engine = ScriptedEngine()
    for text in ["Tokyo.", "It is Tokyo.", "Tokyo is the capital.", "Tokyo!"] + ["Kyoto."] * 4:
        engine.enqueue(text)
    async with Orchestrator(engine) as orch:
        result = await orch.generate(JAPAN, n=8, until=stopping.ESC(4), rerankers=[MajorityVote()])
    assert result.samples_used == 4  # the first window agrees on one meaning


# -- embedding clusters (average link) on fixed vectors, then the real model
def unit(*rows: Sequence[float]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    normed: np.ndarray = a / np.linalg.norm(a, axis=1, keepdims=True)
    return normed


def chain() -> np.ndarray:
    """a·b = b·c = 0.9 (cos 25.84°), a·c = cos 51.68° = 0.62: a chain."""
    t = math.acos(0.9)
    return unit([1.0, 0.0], [math.cos(t), math.sin(t)], [math.cos(2 * t), math.sin(2 * t)])


@pytest.mark.parametrize(
    ("similarity", "labels"),
    [
        (0.95, [0, 1, 2]),  # no pair is that close
        (0.85, [0, 0, 1]),  # a-b merge (ties broken by scipy's order); {a, b}·c averages (0.9 + 0.62) / 2 = 0.76: no chain
        (0.75, [0, 0, 0]),  # 0.76 >= 0.75: all one
        (1.0, [0, 1, 2]),
    ],
)
def test_embedding_clusters_average_link(similarity: float, labels: list[int]) -> None:
    got = embedding_clusters(chain(), similarity)
    assert len(set(got)) == len(set(labels))
    if similarity == 0.85:
        assert got[1] in (got[0], got[2]) and got[0] != got[2]


class FixedEmbedder(Embedder):
    """Looks texts up in a table of vectors; counts the texts encoded."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__()
        self.table = table
        self.seen: list[str] = []

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        vectors: np.ndarray = unit(*[self.table[t] for t in texts]).astype(np.float32)
        return vectors


@pytest.mark.asyncio
async def test_embedding_vote_with_fixed_vectors() -> None:
    table = {"Tokyo.": [1.0, 0.05], "The capital is Tokyo.": [1.0, 0.0], "Kyoto.": [0.0, 1.0]}
    embedder = FixedEmbedder(table)
    vote = MajorityVote(cluster="embedding", similarity=0.9, embedder=embedder)
    scores = await vote.score(Request(prompt=JAPAN), cands(["Tokyo.", "The capital is Tokyo.", "Kyoto.", "Tokyo."]))
    assert [s.details["answer"] for s in scores] == ["tokyo", "tokyo", "kyoto", "tokyo"]
    assert sorted(embedder.seen) == sorted(table)  # distinct texts encoded once
    with pytest.raises(ConfigError, match="embedder"):
        vote.to_config()  # a shared embedder is code, not config


@pytest.mark.slow
@pytest.mark.asyncio
async def test_embedding_vote_on_the_real_model(minilm: Embedder) -> None:
    texts = [
        "The capital of Japan is Tokyo.",
        "Tokyo is the capital of Japan.",
        "The capital city of Japan is Tokyo.",
        "Bananas are rich in potassium.",
    ]
    scores = await MajorityVote(cluster="embedding", embedder=minilm).score(Request(prompt=JAPAN), cands(texts))
    answers = [s.details["answer"] for s in scores]
    assert answers[0] == answers[1] == answers[2] != answers[3]
    assert scores[0].value == 0.75


# -- configs: short forms, dumps, bad values
@pytest.mark.parametrize(
    ("spec", "config"),
    [
        ("vote", {"cluster": "span", "extract": "auto"}),
        ("vote:embedding", {"cluster": "embedding", "extract": "auto", "similarity": None}),
        ("vote:embedding@0.9:text", {"cluster": "embedding", "similarity": 0.9, "extract": "text"}),
        ("vote:cisc@tail:none:number", {"votes": "cisc", "signal": "tail", "cluster": "none", "extract": "number"}),
        ("vote:SPAN:first_line", {"cluster": "span", "extract": "first_line"}),
        ("vote:none", {"cluster": "none", "extract": "auto"}),
    ],
)
def test_cluster_short_forms_round_trip(spec: str, config: dict[str, object]) -> None:
    cfg = reranker_config(spec)
    assert {k: getattr(cfg, k) for k in config} == config
    assert reranker_config(cfg.model_dump()) == cfg
    vote = cfg.build()
    assert isinstance(vote, MajorityVote) and vote.cluster == cfg.cluster  # type: ignore[attr-defined]
    assert vote.to_config() == cfg.model_copy(update={"weight": 1.0})


def test_default_cluster_is_left_out_of_the_dump() -> None:
    assert reranker_config("vote").model_dump() == {"kind": "vote", "weight": 1.0, "extract": "auto", "votes": "uniform"}
    assert reranker_config({"kind": "vote", "cluster": "span"}).model_dump() == reranker_config("vote").model_dump()
    assert reranker_config("vote:none").model_dump()["cluster"] == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("vote:span@0.9", "similarity: only read by cluster=embedding"),
        ("vote:embedding@high", "similarity: must be a cosine similarity"),
        ("vote:embedding@nan", "similarity: must be a cosine similarity"),
        ("vote:embedding@0", "similarity"),
        ("vote:embedding@1.5", "similarity"),
        ("vote:embedding@" + "9" * 5_000, "similarity"),
        ({"kind": "vote", "cluster": "entail"}, "cluster"),
        ({"kind": "vote", "similarity": 0.9}, "similarity: only read by cluster=embedding"),
    ],
)
def test_bad_cluster_settings(spec: str | dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reranker_config(spec)


def test_bad_cluster_arguments() -> None:
    with pytest.raises(ConfigError, match="cluster"):
        MajorityVote(cluster="meaning")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="similarity"):
        MajorityVote(cluster="embedding", similarity=math.inf)
    with pytest.raises(ConfigError, match="embedder"):
        MajorityVote(embedder=FixedEmbedder({}))


# -- signals computed while generating are read as they are
@pytest.mark.asyncio
async def test_vote_reads_candidate_signals_when_present() -> None:
    texts = ["51", "52", "52"]
    cs = cands(texts)  # no log-probabilities at all
    for c, p in zip(cs, [0.8, 0.1, 0.1], strict=True):
        c.signals = {"mean_logprob": math.log(p)}
    scores = await MajorityVote(extract="number", weight="cisc").score(Request(prompt="q"), cs)
    assert [s.value for s in scores] == pytest.approx([0.8, 0.2, 0.2])
