"""Per-candidate reranking work started as each candidate finishes (PerCandidate)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import numpy as np
import pytest

from nbest import Orchestrator, VLLMEngine
from nbest.rerankers import (
    CrossEncoder,
    Embedder,
    EmbeddingConsensus,
    MajorityVote,
    MeanLogProb,
    Ranker,
    RewardModel,
    SourceSimilarity,
)
from nbest.rerankers.base import PerCandidate, cache_key
from nbest.types import Candidate, Request, Score
from tests.scripted import ScriptedEngine, Step

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXTS = ["It is 51.", "51", "The answer is 52", "51 I think"]


class CountingEmbedder(Embedder):
    """Letter counts as vectors (deterministic, no model); records every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.encoded += len(texts)
        rows = []
        for t in texts:
            v = np.array([t.count(ch) for ch in "abcdefghijklmnopqrstuvwxyz0123456789 ."], dtype=np.float32) + 0.01
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


class Recorder:
    """A per-candidate reranker that logs when it is called."""

    name = "recorder"
    on_event_loop = True

    def __init__(self, engine: ScriptedEngine, fail: bool = False) -> None:
        self.engine = None
        self.scripted = engine
        self.fail = fail
        self.log: list[tuple[str, int, int]] = []  # (what, candidate index or -1, candidates finished so far)
        self.released: list[str] = []

    async def prepare(self, request: Request, candidate: Candidate) -> None:
        self.log.append(("prepare", candidate.index, len(self.scripted.finished)))
        if self.fail:
            raise RuntimeError("no model here")

    def release(self, request: Request) -> None:
        self.released.append(request.id)

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        self.log.append(("score", -1, len(self.scripted.finished)))
        return [Score(value=float(len(c.text))) for c in candidates]


def script(engine: ScriptedEngine, delays: Sequence[float]) -> None:
    for text, delay in zip(TEXTS, delays, strict=False):
        engine.enqueue(text, delay=delay)


async def test_prepare_runs_for_each_candidate_as_it_finishes(scripted: ScriptedEngine) -> None:
    script(scripted, [0.15, 0.0, 0.1, 0.05])
    recorder = Recorder(scripted)
    assert isinstance(recorder, PerCandidate)
    async with Orchestrator(scripted, rerankers=Ranker([recorder])) as orch:
        result = await orch.generate("q", n=4, seed=1)
    prepares = [entry for entry in recorder.log if entry[0] == "prepare"]
    assert [index for _, index, _ in prepares] == [1, 3, 2, 0]  # the engine's finish order
    assert [done for _, _, done in prepares] == [1, 2, 3, 4]  # each right after its own finish, before the next
    assert recorder.log[-1][0] == "score"
    assert recorder.released == [result.id]
    assert result.timings.rerank_after_last_s >= result.timings.rerank_s >= 0
    assert not result.warnings


async def test_scores_equal_those_without_prepare_and_nothing_is_encoded_after_the_last() -> None:
    results = {}
    embedders = {}
    for prepare in (True, False):
        engine = ScriptedEngine()
        script(engine, [0.03, 0.0, 0.02, 0.01])
        embedder = embedders[prepare] = CountingEmbedder()
        ranker = Ranker(
            [EmbeddingConsensus(embedder), SourceSimilarity(embedder), MajorityVote(extract="number"), MeanLogProb()],
            prepare=prepare,
        )
        async with Orchestrator(engine, rerankers=ranker) as orch:
            request = orch.request("q", n=4, seed=1, source="fifty-one")
            results[prepare] = await orch.run(request)
    with_prepare, without = results[True], results[False]
    assert [(c.index, c.scores) for c in with_prepare.candidates] == [(c.index, c.scores) for c in without.candidates]
    assert [a.model_dump() for a in with_prepare.answers] == [a.model_dump() for a in without.answers]
    # with prepare every text (and the source, once) was encoded before ranking; rank reused all of them
    assert embedders[True].encoded == 5 and embedders[True].reused == 4 + 5
    assert embedders[False].encoded == 9 and embedders[False].reused == 0
    assert len(embedders[True].cache) == 0  # released once ranked


async def test_candidates_finishing_together_are_encoded_in_one_batch() -> None:
    engine = ScriptedEngine()
    script(engine, [0.0, 0.0, 0.0, 0.0])
    embedder = CountingEmbedder()
    embedder.debounce = 0.05
    async with Orchestrator(engine, rerankers=[EmbeddingConsensus(embedder)]) as orch:
        await orch.generate("q", n=4, seed=1)
    assert [len(batch) for batch in embedder.calls] == [4]
    assert embedder.reused == 4


async def test_a_failing_prepare_falls_back_to_plain_scoring_with_a_warning() -> None:
    engine = ScriptedEngine()
    script(engine, [0.0, 0.01, 0.02, 0.03])
    recorder = Recorder(engine, fail=True)
    async with Orchestrator(engine, rerankers=Ranker([recorder])) as orch:
        result = await orch.generate("q", n=4, seed=1)
    assert [c.scores["recorder"] for c in result.candidates] == sorted((float(len(t)) for t in TEXTS), reverse=True)
    failed = [w for w in result.warnings if "prepare failed" in w]
    assert failed == ["reranker recorder: prepare failed (RuntimeError: no model here); scored after the last candidate"]


async def test_a_failing_embedding_prepare_is_recomputed_by_score() -> None:
    class Flaky(CountingEmbedder):
        async def prepare(self, key: object, text: str) -> None:  # type: ignore[override]
            raise OSError("disk full")

    engine = ScriptedEngine()
    script(engine, [0.0, 0.0, 0.0, 0.0])
    plain = CountingEmbedder()
    async with Orchestrator(engine, close_engines=False, rerankers=[EmbeddingConsensus(Flaky())]) as orch:
        flaky_result = await orch.generate("q", n=4, seed=1)
    script(engine, [0.0, 0.0, 0.0, 0.0])
    async with Orchestrator(engine, rerankers=Ranker([EmbeddingConsensus(plain)], prepare=False)) as orch:
        plain_result = await orch.generate("q", n=4, seed=1)
    assert [c.scores for c in flaky_result.candidates] == [c.scores for c in plain_result.candidates]
    assert any("prepare failed (OSError: disk full)" in w for w in flaky_result.warnings)


async def test_nothing_is_cached_across_requests() -> None:
    engine = ScriptedEngine()
    embedder = CountingEmbedder()
    vote = MajorityVote(extract="number")
    async with Orchestrator(engine, rerankers=[EmbeddingConsensus(embedder), vote]) as orch:
        script(engine, [0.0, 0.0, 0.0, 0.0])
        first = await orch.generate("q", n=4, seed=1)
        assert len(embedder.cache) == 0 and len(vote._answers) == 0
        script(engine, [0.0, 0.0, 0.0, 0.0])  # the same texts again, in a new request
        second = await orch.generate("q", n=4, seed=1)
    assert first.id != second.id
    assert embedder.encoded == 8  # encoded again for the second request: no vector outlived its request
    assert len(embedder.cache) == 0 and len(vote._answers) == 0
    # a request whose ranking never came (cancelled) is bounded by the cache size
    embedder.cache.size = 2
    for i in range(3):
        await embedder.prepare(cache_key(Request(prompt="q"), first.candidates[i]), first.candidates[i].text)
    assert len(embedder.cache) == 2


async def test_prepare_false_and_adaptive_runs_rank_as_before(scripted: ScriptedEngine) -> None:
    recorder = Recorder(scripted)
    async with Orchestrator(scripted, rerankers=Ranker([recorder], prepare=False)) as orch:
        script(scripted, [0.0, 0.0, 0.0, 0.0])
        result = await orch.generate("q", n=4, seed=1)
    assert [what for what, _, _ in recorder.log] == ["score"]
    assert result.timings.rerank_after_last_s >= result.timings.rerank_s


@pytest.mark.slow
async def test_real_engine_and_minilm_encode_nothing_after_the_last_candidate(vllm_engine: VLLMEngine) -> None:
    embedder = Embedder()
    ranker = Ranker([EmbeddingConsensus(embedder), MeanLogProb()])
    async with Orchestrator(vllm_engine, close_engines=False, rerankers=ranker) as orch:
        result = await orch.generate("Name a colour.", n=4, max_tokens=6, seed=3)
    ok = [c for c in result.candidates if c.ok]
    assert len(ok) == 4
    assert embedder.encoded == 4  # each text once, as it finished
    assert embedder.reused == 4  # ranking encoded nothing after the last candidate
    assert result.timings.rerank_after_last_s > 0
    assert all(c.scores["embed"] is not None for c in ok)


async def test_a_cancelled_batch_leader_does_not_hold_the_texts_that_joined_it() -> None:
    embedder = CountingEmbedder()
    embedder.debounce = 0.2
    request = Request(prompt="q")
    engine = ScriptedEngine()
    script(engine, [0.0, 0.0])
    async with Orchestrator(engine, rerankers=[MeanLogProb()]) as orch:
        result = await orch.generate("q", n=2, seed=1)
    first, second = result.candidates[0], result.candidates[1]
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await embedder.prepare(cache_key(request, first), first.text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lead)
        await anyio.sleep(0.01)  # the first text opened a batch
        with anyio.fail_after(2):
            async with anyio.create_task_group() as joined:
                joined.start_soon(embedder.prepare, cache_key(request, second), second.text)
                await anyio.sleep(0.01)  # the second joined it
                leader.cancel()  # the batch's opener gives up before encoding
    assert embedder.encoded == 0 and len(embedder.cache) == 0  # nothing hangs; score encodes what is missing


async def test_a_text_being_encoded_is_not_encoded_again() -> None:
    class Slow(CountingEmbedder):
        def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
            time.sleep(0.1)
            return super().encode_sync(texts)

    embedder = Slow()
    embedder.debounce = 0.0
    key = ("r", 0, "h")
    async with anyio.create_task_group() as tg:
        tg.start_soon(embedder.prepare, key, "51")
        await anyio.sleep(0.03)  # its batch is closed and being encoded
        tg.start_soon(embedder.prepare, key, "51")  # as a second reranker sharing the embedder would
    assert embedder.encoded == 1 and key in embedder.cache


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.test_rerank_models import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_prepare"), num_labels=1)


@pytest.mark.parametrize("kind", ["cross", "reward"])
async def test_model_rerankers_reuse_what_was_prepared(kind: str, tiny_model: str) -> None:
    from tests.test_rerank_models import cands

    reranker: CrossEncoder | RewardModel = CrossEncoder(tiny_model) if kind == "cross" else RewardModel(tiny_model)
    computed: list[int] = []
    if isinstance(reranker, CrossEncoder):
        predict = reranker.predict_sync
        reranker.predict_sync = lambda pairs: computed.append(len(pairs)) or predict(pairs)  # type: ignore[method-assign]
    else:
        score_sync = reranker.score_sync
        reranker.score_sync = lambda request, texts: computed.append(len(texts)) or score_sync(request, texts)  # type: ignore[method-assign]
    request = Request(prompt="What is the capital of France?")
    candidates = cands(TEXTS)
    plain = [s.value for s in await reranker.score(request, candidates)]
    computed.clear()
    for c in candidates[:3]:
        await reranker.prepare(request, c)
    prepared = [s.value for s in await reranker.score(request, candidates)]
    assert prepared == pytest.approx(plain, abs=1e-5)
    assert computed == [1, 1, 1, 1]  # three alone ahead, then only the fourth in score
    reranker.release(request)
    computed.clear()
    await reranker.score(request, candidates)
    assert computed == [4]  # released: nothing kept for the request


async def test_adaptive_waves_prepare_each_candidate_once_and_release_at_the_end() -> None:
    from nbest import stopping

    engine = ScriptedEngine(respond=lambda prompt, params, rid: Step(text="51", delay=0.01 * ((params.seed or 0) % 3)))
    embedder = CountingEmbedder()
    recorder = Recorder(engine)
    vote = MajorityVote(extract="number")
    ranker = Ranker([vote, EmbeddingConsensus(embedder), recorder])
    async with Orchestrator(engine, rerankers=ranker) as orch:
        result = await orch.generate("q", n=16, seed=1, until=stopping.Beta(0.9), wave=4)
    assert result.samples_used is not None and result.samples_used < 16  # stopped early
    prepared = sorted(index for what, index, _ in recorder.log if what == "prepare")
    assert prepared[: result.samples_used] == list(range(result.samples_used))  # every ranked candidate was prepared
    # each text encoded once over the waves (the ranked ones, and perhaps some of the cancelled next wave)
    assert result.samples_used <= embedder.encoded <= len(prepared)  # not again for every wave's ranking
    assert embedder.reused >= result.samples_used
    assert recorder.released == [result.id]  # once, after the last wave
    assert len(embedder.cache) == 0 and len(vote._answers) == 0
    assert not result.warnings
