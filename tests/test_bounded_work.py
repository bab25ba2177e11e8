"""Bounded work per request: strategies that cannot blow up, answer extraction that
cannot run for hours, server limits checked before any work, reranking that
stays off the event loop and within its deadline, and batch input whose number
of lines costs no more memory than its ids."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from nbest import Orchestrator
from nbest.batch.inputs import MAX_BAD_KEPT, check_input
from nbest.errors import ConfigError
from nbest.rerankers.extract import get_extractor, last_number, normalize_answer, normalize_number
from nbest.rerankers.logprob import MeanLogProb
from nbest.rerankers.ranker import Ranker, in_worker_loop
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.server.limits import result_bytes
from nbest.server.service import Options, Service
from nbest.strategies import Composite, Fixed, Grid, Mixture, PromptVariants, Route, from_config
from nbest.strategies.base import MAX_DEPTH, MAX_ITEMS, rendered_limit, seeded_rng
from nbest.types import Candidate, CandidateSpec, Request, Result, SamplingParams, Score
from tests.scripted import ScriptedEngine

# -- strategies -------------------------------------------------------------------


def test_grid_plans_a_huge_grid_without_building_it() -> None:
    values = [round(0.05 + 0.01 * i, 2) for i in range(MAX_ITEMS)]
    grid = Grid(temperature=values, top_p=values, top_k=list(range(1, MAX_ITEMS + 1)), min_p=values, fill="sample")
    assert grid.size() == MAX_ITEMS**4  # 16.7 million combinations
    plan = grid.plan(Request(prompt="x", n=64, params=SamplingParams(seed=3)))
    assert len(plan) == 64 and len({s.strategy for s in plan}) == 64  # drawn without replacement


def test_grid_points_are_the_product_in_order() -> None:
    grid = Grid(temperature=[0.5, 1.0], top_p=[0.8, 0.9, 1.0], top_k=[10, 40])
    expected = [
        {"temperature": t, "top_p": p, "top_k": k} for t, p, k in itertools.product([0.5, 1.0], [0.8, 0.9, 1.0], [10, 40])
    ]
    assert grid.combinations() == expected
    assert [grid.point(k) for k in range(grid.size())] == expected


@pytest.mark.parametrize("n", [1, 5, 12, 30])
def test_grid_sample_order_is_unchanged_for_small_grids(n: int) -> None:
    """Small grids draw exactly as before: whole shuffles, every point once before any repeats."""
    grid = Grid(temperature=[0.3, 0.7, 1.1], top_p=[0.9, 1.0], fill="sample")
    request = Request(prompt="x", n=n, params=SamplingParams(seed=11))
    points = grid.combinations()
    rng = seeded_rng(request, "grid")
    before: list[dict[str, float]] = []
    while len(before) < n:
        before += rng.sample(points, len(points))
    assert [grid.point(k) for k in grid.order(request)] == before[:n]


def _nest(depth: int) -> Fixed | Route:
    strategy: Fixed | Route = Fixed()
    for _ in range(depth - 1):
        strategy = Route({"default": 1.0}, strategy)
    return strategy


def test_nesting_is_capped_in_python_too() -> None:
    assert _nest(MAX_DEPTH) is not None
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels"):
        _nest(MAX_DEPTH + 1)
    with pytest.raises(ConfigError, match="nested more than"):
        Composite([(1, _nest(MAX_DEPTH))])
    with pytest.raises(ConfigError, match="nested more than"):
        PromptVariants(["Be brief."], _nest(MAX_DEPTH))


def test_a_deeply_nested_config_is_refused_before_it_is_read() -> None:
    config: dict[str, object] = {"kind": "fixed"}
    for _ in range(5_000):  # deeper than Python's recursion limit if it were walked
        config = {"kind": "mixture", "components": [{"weight": 1, "strategy": config}]}
    with pytest.raises(ConfigError, match="nested more than"):
        from_config(config)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Mixture([(1, Fixed())] * (MAX_ITEMS + 1)), "components"),
        (lambda: Composite([(1, Fixed())] * (MAX_ITEMS + 1)), "parts"),
        (lambda: PromptVariants([f"v{i}" for i in range(MAX_ITEMS + 1)]), "variants"),
        (lambda: Route({f"e{i}": 1.0 for i in range(MAX_ITEMS + 1)}), "weights"),
        (lambda: Grid(top_k=list(range(1, MAX_ITEMS + 2))), "top_k"),
    ],
)
def test_list_lengths_are_capped(build: object, field: str) -> None:
    with pytest.raises(ConfigError, match=f"at most {MAX_ITEMS} entries") as info:
        build()  # type: ignore[operator]
    assert field in str(info.value)


@pytest.mark.parametrize("weights", [[1e308, 1e308], [float("inf"), 1.0], [float("nan"), 1.0], [0.0, 0.0], [-1.0, 2.0]])
def test_weights_must_be_finite_and_sum_to_a_positive_number(weights: list[float]) -> None:
    with pytest.raises(ConfigError, match="weights"):
        Route(dict(zip(["a", "b"], weights, strict=True)))
    with pytest.raises(ConfigError, match="weights"):
        PromptVariants(["a", "b"], assign="weighted", weights=weights)
    with pytest.raises(ConfigError, match="weight"):
        Mixture([(w, Fixed()) for w in weights])


def test_variant_expansion_is_measured_before_it_is_built() -> None:
    variants = PromptVariants([{"text": "{prompt}" * 1_000, "role": "prompt"}])
    request = Request(prompt="y" * 1_000, n=2)
    with pytest.raises(ConfigError, match="renders a prompt of 1000000 characters; at most 1000") as info, rendered_limit(1_000):
        variants.plan(request)
    assert info.value.parameter == "variants"
    big = PromptVariants([{"text": "{prompt}" * 1_001, "role": "prompt"}])
    with pytest.raises(ConfigError, match="at most 1000000"):  # the library's own cap
        big.plan(request)
    assert len(variants.plan(Request(prompt="y", n=1))[0].prompt or "") == 1_000


# -- answer extraction --------------------------------------------------------------


def test_client_style_catastrophic_regex_runs_in_linear_time() -> None:
    extract = get_extractor("regex:(.|.)*\x00")
    started = time.perf_counter()
    assert extract("a" * 100_000) is None
    assert time.perf_counter() - started < 1.0  # backtracking would take longer than the universe


@pytest.mark.parametrize("pattern", ["(?<=a)b", "(?!a)b", "(a)\\1"])
def test_patterns_re2_cannot_run_are_refused(pattern: str) -> None:
    with pytest.raises(ConfigError, match="RE2"):
        get_extractor(f"regex:{pattern}")


def test_regex_flags_still_work() -> None:
    import re

    from nbest.rerankers.extract import regex

    assert regex(r"final: (\w+)", re.IGNORECASE)("FINAL: Yes") == "Yes"
    assert regex(r"^(\d+)$", re.MULTILINE)("a\n12\nb\n7") == "7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e999999999", None),  # never evaluated
        ("1e-999999999", None),
        ("1" * 5_000, None),
        ("2e3", "2000"),
        ("1e400", "1" + "0" * 400),
    ],
)
def test_numbers_are_bounded_before_they_are_evaluated(text: str, expected: str | None) -> None:
    started = time.perf_counter()
    assert normalize_number(text) == expected
    assert time.perf_counter() - started < 1.0


def test_a_huge_boxed_exponent_is_compared_as_text() -> None:
    started = time.perf_counter()
    assert normalize_answer(get_extractor("boxed")(r"so \boxed{1e999999999}") or "") == "1e999999999"
    assert last_number("9" * 10_000) is None
    assert time.perf_counter() - started < 1.0


# -- reranking off the loop, under a deadline ---------------------------------------


class Spin:
    """A reranker that computes synchronously (no await) for ``seconds``."""

    name = "spin"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.thread: str | None = None

    async def score(self, request: Request, candidates: Sequence[Candidate]) -> list[Score]:
        self.started.set()
        self.thread = threading.current_thread().name
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return [Score(value=float(c.index)) for c in candidates]


SPEC = CandidateSpec(index=0, params=SamplingParams())


def _candidates(n: int) -> list[Candidate]:
    return [Candidate(index=i, text=f"answer {i}", mean_logprob=-0.1 * i, spec=SPEC) for i in range(n)]


@pytest.mark.asyncio
async def test_a_synchronous_reranker_does_not_stall_the_loop() -> None:
    spin = Spin(0.6)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        ranked = await Ranker([spin]).rank(Request(prompt="x", n=3), _candidates(3))
        tg.cancel_scope.cancel()
    assert [c.index for c in ranked.candidates] == [2, 1, 0]
    assert spin.thread != threading.current_thread().name
    assert ticks >= 10  # the loop kept turning while the reranker computed


@pytest.mark.asyncio
async def test_a_reranker_past_the_deadline_counts_as_failed() -> None:
    ranked = await Ranker([Spin(2.0), MeanLogProb()]).bounded(0.2).rank(Request(prompt="x", n=3), _candidates(3))
    assert any("spin failed: did not finish within the deadline (0.2 s)" in w for w in ranked.warnings)
    assert [c.index for c in ranked.candidates] == [0, 1, 2]  # the log-probabilities ranked them
    with pytest.raises(ConfigError, match="timeout"):
        Ranker([MeanLogProb()], timeout=0)


@pytest.mark.asyncio
async def test_cancelling_work_in_the_worker_loop_stops_it() -> None:
    steps = 0

    async def work() -> None:
        nonlocal steps
        while True:
            steps += 1
            await asyncio.sleep(0.005)

    with anyio.move_on_after(0.1):
        await in_worker_loop(work)
    await anyio.sleep(0.05)
    stopped_at = steps
    await anyio.sleep(0.1)
    assert stopped_at > 0 and steps == stopped_at


# -- the server ---------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_healthz_and_other_requests_answer_while_a_slow_reranker_runs(scripted: ScriptedEngine) -> None:
    spin = Spin(3.0)
    settings = ServerSettings(max_n=8)
    async with Orchestrator(scripted, rerankers=[spin]) as orch:
        app = create_app(orch, settings, prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            slow: list[httpx.Response] = []
            async with anyio.create_task_group() as tg:

                async def post() -> None:
                    slow.append(await client.post("/v1/nbest", json={"prompt": "slow", "n": 2}))

                tg.start_soon(post)
                await anyio.to_thread.run_sync(spin.started.wait, 10)  # set in the reranker's thread
                started = time.perf_counter()
                health = await client.get("/healthz")
                other = await client.post("/v1/nbest", json={"prompt": "fast", "n": 2, "rerankers": ["logprob"]})
                elapsed = time.perf_counter() - started
                assert not slow  # still reranking
            assert health.status_code == 200 and other.status_code == 200, other.text
            assert elapsed < spin.seconds / 3, f"answered after {elapsed:.2f} s while a {spin.seconds} s reranker ran"
            assert slow[0].status_code == 200


def _result(ident: str, chars: int) -> Result:
    candidate = Candidate(index=0, text="x" * chars, spec=SPEC)
    return Result(id=ident, prompt="p", n=1, candidates=[candidate], best=candidate)


def test_kept_results_are_bounded_in_bytes() -> None:
    one = result_bytes(_result("a", 10_000))
    service = Service(None, ServerSettings(remember_bytes=3 * one, remember_results=100), None)
    for i in range(10):
        service.remember(_result(f"r{i}", 10_000))
    assert list(service.results) == ["r7", "r8", "r9"]
    assert service.remembered_bytes <= 3 * one
    service.remember(_result("huge", 100_000))  # larger than the whole bound: not kept, nothing evicted
    assert list(service.results) == ["r7", "r8", "r9"]


def test_rerankers_are_cached_by_canonical_config_not_by_spelling() -> None:
    service = Service(None, ServerSettings(), None)
    for i in range(1, 65):
        ranker = service.ranker([f"embed=1.{i:04d}"])
        assert ranker is not None
    assert len(service._rerankers) == 1  # one model for 64 spellings


def test_the_plan_is_checked_with_every_text_counted() -> None:
    from nbest.server.errors import ApiError
    from nbest.server.limits import check_plan

    settings = ServerSettings(max_prompt_chars=100)
    request = Request(prompt="q" * 40, system="s" * 30, n=1)
    spec = CandidateSpec(index=0, params=SamplingParams(), prompt="r" * 80)
    with pytest.raises(ApiError, match=r"at most 100 characters per candidate.*got 110 for candidate 0"):
        check_plan(settings, request, [spec])
    check_plan(settings, request, [spec.model_copy(update={"prompt": None})])


@pytest.mark.asyncio(loop_scope="session")
async def test_the_server_plans_once_in_a_worker_thread(scripted: ScriptedEngine) -> None:
    threads: list[str] = []

    class Recording:
        def plan(self, request: Request) -> list[CandidateSpec]:
            threads.append(threading.current_thread().name)
            return Fixed().plan(request)

    async with Orchestrator(scripted) as orch:
        service = Service(orch, ServerSettings(), None)
        request, specs = await service.plan(Request(prompt="x", n=2), Recording())
        candidates = [c async for c in service.stream(request, Options(), Recording())]
    assert len(specs) == 2 and len(candidates) == 2
    assert len(threads) == 1 and threads[0] != threading.current_thread().name  # streamed as planned


@pytest.mark.asyncio(loop_scope="session")
async def test_reranking_runs_under_the_request_deadline(scripted: ScriptedEngine) -> None:
    spin = Spin(1.5)
    async with Orchestrator(scripted, rerankers=[spin, MeanLogProb()]) as orch:
        app = create_app(orch, ServerSettings(max_n=8, rerank_timeout_s=0.3), prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            reply = await client.post("/v1/nbest", json={"prompt": "x", "n": 2})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert any("spin failed: did not finish within the deadline (0.3 s)" in w for w in result["warnings"])
    assert all(c["scores"]["spin"] is None for c in result["candidates"])
    assert len(result["candidates"]) == 2  # every candidate kept, ranked by the others


@pytest.mark.parametrize(
    ("kind", "field", "item"),
    [
        ("mixture", "components", {"weight": 1, "strategy": {"kind": "ladder"}}),
        ("composite", "parts", {"count": 1, "strategy": {"kind": "ladder"}}),
        ("prompt_variants", "variants", "Be brief."),
    ],
)
def test_a_long_list_is_refused_before_its_entries_are_built(kind: str, field: str, item: object) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: at most {MAX_ITEMS} entries \\(got 20000\\)"):
        from_config({"kind": kind, field: [item] * 20_000})


# -- batch input: memory bounded by the ids, whatever the number of lines --------------------------

_BATCH_BASE = Request(prompt="(per line)", n=3, params=SamplingParams(temperature=0.7, max_tokens=32))


def test_checking_a_batch_input_of_many_lines_holds_their_ids_not_their_requests(tmp_path: Path) -> None:
    """50,000 tiny lines: the check keeps 16 bytes per id (and sorts them for
    duplicates), while holding their Requests, as the input was once read, takes
    over 1 KB each."""
    import numpy  # noqa: F401  (imported by the check: not its cost)

    lines = 50_000
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt":"x"}\n' * lines)
    warm = tmp_path / "warm.jsonl"
    warm.write_bytes(b'{"prompt":"x"}\n' * 100)
    check_input(warm, _BATCH_BASE, max_n=64)  # pydantic's and numpy's first-call caches are not the check's
    tracemalloc.start()
    try:
        checked = check_input(path, _BATCH_BASE, max_n=64)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        held = list(itertools.islice(checked.requests(), 1000))
        per_request = (tracemalloc.get_traced_memory()[0] - base) / len(held)
    finally:
        tracemalloc.stop()
    holding = per_request * lines
    assert (checked.prompts, checked.bad_lines) == (lines, 0)
    assert peak < 1_000_000 + 64 * lines, f"peak {peak} bytes for {lines} lines"  # 16 B an id, ~24 more while sorted
    assert peak < 40 * 2**20 < holding, (peak, holding)
    assert peak * 10 < holding, (peak, holding)


def test_a_batch_input_of_100000_bad_lines_is_counted_and_reported_in_full_keeping_a_few(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbest.cli import main
    from tests.batch_engines import same_answer

    bad = 100_000
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"{x\n" * bad + b'{"id": "ok", "prompt": "fine"}\n')
    handed: list[int] = []
    checked = check_input(inp, _BATCH_BASE, max_n=64, on_bad=lambda line: handed.append(line.line) if len(handed) < 3 else None)
    assert (checked.prompts, checked.bad_lines, len(checked.bad)) == (1, bad, MAX_BAD_KEPT)
    assert [b.line for b in checked.bad] == list(range(1, MAX_BAD_KEPT + 1)) and handed == [1, 2, 3]
    out = tmp_path / "out.jsonl"
    main(["batch", str(inp), "-o", str(out), "-n", "1"], engine_factory=same_answer)
    assert f"nbest batch: {bad} bad input line(s) skipped, see {out}.errors.jsonl" in capsys.readouterr().err
    with (tmp_path / "out.jsonl.errors.jsonl").open() as f:
        count = sum(1 for _ in f)
    assert count == bad  # every one reported, none lost
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["ok"]
