"""Many requests under a limit (``Orchestrator.as_completed`` and ``generate_many`` over it)
on the scripted engine: order, limits, checks, early exit, cancellation, a dead engine."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from nbest import ConfigError, EngineDeadError, NbestError, Orchestrator, rerankers, stopping, strategies
from nbest.batch import open_output, run_batch
from nbest.evaluation import EvalItem, generate_samples
from nbest.types import Prompt, Request, Result, SamplingParams
from tests.scripted import ScriptedEngine, Step

pytestmark = pytest.mark.asyncio(loop_scope="session")

SLOW = 30.0  # a request that would take this long must be aborted, never awaited


def by_prompt(
    delays: dict[str, float], error: dict[str, BaseException] | None = None
) -> Callable[[Prompt, SamplingParams, str], Step]:
    """Reply after ``delays[text]`` s to the prompt whose text is ``text`` (or raise ``error[text]``)."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        return Step(text=f"{text}:{params.seed}", delay=delays.get(text, 0.0), error=(error or {}).get(text))

    return respond


def requests_for(texts: list[str], n: int = 2) -> list[Request]:
    return [Request(prompt=text, n=n, params=SamplingParams(seed=10 * i), chat=False) for i, text in enumerate(texts)]


async def test_results_come_as_they_finish_with_their_position(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow": 0.3, "middle": 0.1})
    requests = requests_for(["slow", "middle", "fast"])
    async with Orchestrator(scripted, close_engines=False) as orch:
        got = [(i, result) async for i, result in orch.as_completed(requests, concurrency=3)]
    assert [i for i, _ in got] == [2, 1, 0]
    assert all(result.id == requests[i].id for i, result in got)
    assert all(result.prompt == requests[i].prompt and len(result.candidates) == 2 for i, result in got)
    assert [c.rank for c in got[0][1].candidates] == [1, 2]  # ranked


async def test_at_most_concurrency_requests_run_started_in_order(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=0.02)
    requests = requests_for([f"p{i}" for i in range(7)], n=3)
    async with Orchestrator(scripted, close_engines=False, max_in_flight=64) as orch:
        got = [i async for i, _ in orch.as_completed(requests, concurrency=2)]
    assert sorted(got) == list(range(7))
    assert scripted.max_running == 2 * 3
    started = list(dict.fromkeys(call.request_id.rsplit("-", 1)[0] for call in scripted.history))
    assert started == [r.id for r in requests]


async def test_candidates_in_flight_stay_under_max_in_flight(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=0.02)
    async with Orchestrator(scripted, close_engines=False, max_in_flight=5) as orch:
        got = [i async for i, _ in orch.as_completed(requests_for(["a", "b", "c", "d"], n=4), concurrency=4)]
    assert sorted(got) == [0, 1, 2, 3]
    assert scripted.max_running == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, r"concurrency: must be a whole number >= 1 \(got 0\)"),
        ({"concurrency": True}, "concurrency: must be a whole number >= 1"),
        ({"timeout": -1}, "timeout: must be a positive number"),
        ({"wave": 4}, "wave: only used with a stopping rule"),
        ({"strategy": strategies.Fixed(engine="elsewhere")}, r"requests\[0\]: strategy Fixed: unknown engine 'elsewhere'"),
    ],
)
async def test_bad_settings_are_refused_before_anything_runs(
    scripted: ScriptedEngine, kwargs: dict[str, object], message: str
) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        with pytest.raises(ConfigError, match=message):
            async for _ in orch.as_completed(requests_for(["a", "b"]), **kwargs):  # type: ignore[arg-type]
                pass
    assert scripted.history == []


async def test_every_request_is_checked_before_anything_runs(scripted: ScriptedEngine) -> None:
    requests = requests_for(["a", "b", "c"])
    async with Orchestrator(scripted, close_engines=False, max_n=4) as orch:
        too_many = requests[2].model_copy(update={"n": 5})
        with pytest.raises(ConfigError, match=r"requests\[2\]: n: at most 4 candidates per prompt") as info:
            async for _ in orch.as_completed([*requests[:2], too_many]):
                pass
        assert info.value.parameter == "requests[2].n"
        with pytest.raises(ConfigError, match=r"requests\[1\]: not a Request \(got str\)"):
            async for _ in orch.as_completed([requests[0], "b"]):  # type: ignore[list-item]
                pass
        with pytest.raises(ConfigError, match=r"prompts\[1\]: n: at most 4"):
            await orch.generate_many(["a", too_many], n=2)
    assert scripted.history == []


async def test_leaving_the_loop_early_aborts_what_still_runs(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow1": SLOW, "slow2": SLOW})
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.fail_after(5):
            async with contextlib.aclosing(orch.as_completed(requests_for(["fast", "slow1", "slow2"]))) as finished:
                async for i, _ in finished:
                    assert i == 0
                    break
        assert not scripted.running
        assert sorted(scripted.aborted) == sorted(c.request_id for c in scripted.history if "fast" not in str(c.prompt))
        assert len(scripted.aborted) == 4


async def test_cancelling_the_caller_aborts_every_request(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=SLOW)
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.move_on_after(0.2):
            await orch.generate_many(["a", "b", "c"], n=2, concurrency=2)
        assert not scripted.running
        assert sorted(scripted.aborted) == sorted(c.request_id for c in scripted.history)
        assert len(scripted.aborted) == 4  # the third prompt never started


async def test_a_dead_engine_ends_the_run_and_aborts_the_rest(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow": SLOW, "dies": 0.05}, error={"dies": EngineDeadError("gone")})
    yielded = []
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.fail_after(5), pytest.raises(EngineDeadError, match="gone"):
            async for i, _ in orch.as_completed(requests_for(["fast", "slow", "dies", "never"]), concurrency=2):
                yielded.append(i)
        assert not scripted.running
    assert yielded == [0]
    slow = [c.request_id for c in scripted.history if "slow" in str(c.prompt)]
    assert set(slow) <= set(scripted.aborted) and len(slow) == 2
    assert not any("never" in str(c.prompt) for c in scripted.history)  # no request starts after the death


async def test_generate_many_keeps_input_order_and_repeated_ids(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"first": 0.2})
    same = Request(id="dup", prompt="first", n=2, params=SamplingParams(seed=1), chat=False)
    other = same.model_copy(update={"prompt": "second"})
    async with Orchestrator(scripted, close_engines=False) as orch:
        results = await orch.generate_many([same, other, "third", same], concurrency=4)
    assert [r.id for r in results[:2]] == ["dup", "dup"] and results[3].id == "dup"
    assert [r.prompt for r in results] == ["first", "second", "third", "first"]
    assert [sorted(c.text for c in r.candidates) for r in results[:2]] == [["first:1", "first:2"], ["second:1", "second:2"]]
    # the requests ran at once: their engine requests never shared an id
    ids = [c.request_id for c in scripted.history]
    assert len(ids) == len(set(ids)) == 2 + 2 + 8 + 2


async def test_closing_the_orchestrator_meanwhile_is_not_a_silent_short_result(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=SLOW)
    got: list[BaseException] = []
    orch = Orchestrator(scripted, close_engines=False)

    async def consume() -> None:
        try:
            await orch.generate_many(["a", "b"], n=1)
        except NbestError as exc:
            got.append(exc)

    async with anyio.create_task_group() as tg, orch:
        tg.start_soon(consume)
        await anyio.sleep(0.1)
    assert len(got) == 1 and "closed with 2 request(s) unfinished" in str(got[0])
    assert len(scripted.aborted) == 2


# -- a lazy iterable: taken as slots free, each request checked as it is taken -------------------


def lazily(
    requests: Sequence[Request | str], taken: list[int] | None = None, closed: list[bool] | None = None
) -> Iterator[Request]:
    """``requests`` one at a time, noting each position taken and whether the generator was closed."""
    try:
        for i, request in enumerate(requests):
            if taken is not None:
                taken.append(i)
            yield request  # type: ignore[misc]
    finally:
        if closed is not None:
            closed.append(True)


async def test_a_lazy_iterable_is_taken_only_as_slots_free(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=0.001 * ((params.seed or 0) % 7))
    requests = requests_for([f"p{i}" for i in range(30)])
    taken: list[int] = []
    ahead: list[int] = []
    async with Orchestrator(scripted, close_engines=False) as orch:
        got: list[tuple[int, Result]] = []
        async for i, result in orch.as_completed(lazily(requests, taken), concurrency=3):
            ahead.append(len(taken) - len(got))  # taken, not yet handed back (this one included)
            got.append((i, result))
    assert taken == list(range(30)) and sorted(i for i, _ in got) == list(range(30))
    assert all(result.id == requests[i].id for i, result in got)
    assert max(ahead) <= 3 + 1  # the running ones and the one just handed back
    started = list(dict.fromkeys(call.request_id.rsplit("-", 1)[0] for call in scripted.history))
    assert started == [r.id for r in requests]  # in input order


async def test_a_lazy_request_that_fails_its_check_stops_the_run_naming_its_position(scripted: ScriptedEngine) -> None:
    """As for a list, the same ConfigError; what ran before it is yielded, what
    still runs is aborted, nothing after it is taken."""
    scripted.respond = by_prompt({"slow": SLOW})
    requests: list[Request | str] = list(requests_for(["fast", "slow", "bad", "never"]))
    requests[2] = requests[2].model_copy(update={"n": 5})  # type: ignore[union-attr]
    taken: list[int] = []
    closed: list[bool] = []
    yielded = []
    async with Orchestrator(scripted, close_engines=False, max_n=4) as orch:
        with anyio.fail_after(5), pytest.raises(ConfigError, match=r"^requests\[2\]: n: at most 4 candidates") as info:
            async for i, _ in orch.as_completed(lazily(requests, taken, closed), concurrency=2):
                yielded.append(i)
        assert info.value.parameter == "requests[2].n"
        assert not scripted.running
        with pytest.raises(ConfigError, match=r"^requests\[1\]: not a Request \(got str\)"):
            async for _ in orch.as_completed(lazily([requests[0], "b"])):
                pass
    assert yielded == [0] and taken[:3] == [0, 1, 2] and 3 not in taken and closed == [True]
    slow = [c.request_id for c in scripted.history if "slow" in str(c.prompt)]
    assert len(slow) == 2 and set(slow) <= set(scripted.aborted)  # "slow" was aborted, not awaited
    assert not any("bad" in str(c.prompt) or "never" in str(c.prompt) for c in scripted.history)


async def test_an_iterable_that_raises_ends_the_run_with_its_error(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow": SLOW})

    def broken() -> Iterator[Request]:
        yield from requests_for(["fast", "slow"])
        raise OSError("input gone")

    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.fail_after(5), pytest.raises(OSError, match="input gone"):
            async for _ in orch.as_completed(broken(), concurrency=3):
                pass
        assert not scripted.running and len(scripted.aborted) == 2


async def test_leaving_a_lazy_loop_early_closes_the_iterable_and_aborts_the_rest(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow1": SLOW, "slow2": SLOW})
    taken: list[int] = []
    closed: list[bool] = []
    source = lazily(list(requests_for(["fast", "slow1", "slow2", "later", "last"])), taken, closed)
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.fail_after(5):
            async with contextlib.aclosing(orch.as_completed(source, concurrency=3)) as finished:
                async for i, _ in finished:
                    assert i == 0
                    break
        assert not scripted.running and closed == [True]
    assert len(taken) <= 4  # three running, at most one more taken when "fast" freed its slot


async def test_repeated_ids_of_a_lazy_input_never_share_an_engine_request_id(scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"first": 0.1})
    same = Request(id="dup", prompt="first", n=2, params=SamplingParams(seed=1), chat=False)
    stand_in = same.model_copy(update={"id": "dup~2", "prompt": "second"})  # an id like the stand-in's
    inputs = [same, same, stand_in, same]
    async with Orchestrator(scripted, close_engines=False) as orch:
        got = {i: result async for i, result in orch.as_completed(iter(inputs), concurrency=4)}
    assert [got[i].id for i in range(4)] == ["dup", "dup", "dup~2", "dup"]
    ids = [c.request_id for c in scripted.history]
    assert len(ids) == len(set(ids)) == 8  # all four at once, each under an id of its own


async def test_a_huge_concurrency_over_a_short_lazy_input_starts_no_idle_workers(scripted: ScriptedEngine) -> None:
    """Workers start as requests come: 10**9 of them would never finish starting."""
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.fail_after(10):
            got = [i async for i, _ in orch.as_completed(iter(requests_for(["a", "b", "c"])), concurrency=10**9)]
            listed = [i async for i, _ in orch.as_completed(requests_for(["a", "b"]), concurrency=10**9)]
    assert (sorted(got), sorted(listed)) == ([0, 1, 2], [0, 1])


async def test_closing_the_orchestrator_during_a_lazy_run_is_not_a_silent_short_result(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=SLOW)
    got: list[BaseException] = []
    orch = Orchestrator(scripted, close_engines=False)

    async def consume() -> None:
        try:
            async for _ in orch.as_completed(iter(requests_for(["a", "b", "c"])), concurrency=2):
                pass
        except NbestError as exc:
            got.append(exc)

    async with anyio.create_task_group() as tg, orch:
        tg.start_soon(consume)
        await anyio.sleep(0.1)
    assert len(got) == 1
    assert "closed with 2 request(s) unfinished, the rest of the input not started" in str(got[0])


async def test_run_requests_runs_any_function_over_a_lazy_input(tmp_path: Path) -> None:
    """What ``nbest batch --ray`` runs over the replicas (``ReplicaPool.run``): the
    same pool, no orchestrator; a request is taken only when a worker frees."""
    from nbest.batch import run_requests
    from nbest.types import Candidate, CandidateSpec

    taken: list[int] = []
    running: set[str] = set()
    most = 0

    async def run(request: Request) -> Result:
        nonlocal most
        running.add(request.id)
        most = max(most, len(running))
        await anyio.sleep(0.001 * (int(request.id[1:]) % 5))
        running.discard(request.id)
        spec = CandidateSpec(index=0, params=request.params)
        candidate = Candidate(index=0, text=f"{request.prompt}!", spec=spec, finish_reason="stop", num_tokens=1)
        return Result(id=request.id, prompt=request.prompt, n=1, candidates=[candidate], best=candidate)

    requests = [Request(id=f"q{i}", prompt=f"p{i}", n=1) for i in range(20)]
    log, _ = open_output(tmp_path / "out.jsonl")
    with log:
        with pytest.raises(ConfigError, match=r"total: must be a whole number >= 0 \(got -1\)"):
            await run_requests(lazily(requests, taken), run, log, concurrency=4, total=-1)
        assert taken == []
        stats = await run_requests(lazily(requests, taken), run, log, concurrency=4, total=20)
    assert (stats.done, stats.total, most) == (20, 20, 4) and taken == list(range(20))
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(r.id for r in requests)


async def test_run_requests_raises_a_workers_error_itself_not_an_exception_group(tmp_path: Path) -> None:
    """The CLI maps an EngineDeadError to one line and exit 1: a group around it would be a traceback."""
    from nbest.batch import run_requests

    async def run(request: Request) -> Result:
        raise EngineDeadError("every replica died and no restart is left")

    log, _ = open_output(tmp_path / "out.jsonl")
    with log, pytest.raises(EngineDeadError, match="no restart is left"):
        await run_requests(iter([Request(id="q0", prompt="p", n=1)]), run, log, concurrency=2, total=1)


# -- the wrappers: run_batch and the evaluation's generate_samples --------------------------------


async def test_run_batch_writes_each_result_as_it_arrives_with_a_stopping_rule(tmp_path: Path, scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(text="The answer is 4.")
    requests = [Request(id=f"q{i}", prompt=f"p{i}", n=16, params=SamplingParams(seed=i)) for i in range(3)]
    log, _ = open_output(tmp_path / "out.jsonl")
    seen: list[tuple[str, int]] = []
    with log:
        async with Orchestrator(scripted, close_engines=False) as orch:
            stats = await run_batch(
                orch,
                requests,
                log,
                until=stopping.Beta(0.9),
                wave=4,
                rerankers=[rerankers.MajorityVote(extract="number")],
                on_result=lambda result, stats: seen.append((result.id, stats.done)),
            )
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["q0", "q1", "q2"]
    assert [line["samples_used"] for line in lines] == [4, 4, 4]
    assert [done for _, done in seen] == [1, 2, 3] and [i for i, _ in seen] == [line["id"] for line in lines]
    assert (stats.done, stats.candidates) == (3, 12)


async def test_run_batch_keeps_what_it_wrote_when_the_engine_dies(tmp_path: Path, scripted: ScriptedEngine) -> None:
    scripted.respond = by_prompt({"slow": SLOW, "dies": 0.05}, error={"dies": EngineDeadError("gone")})
    log, _ = open_output(tmp_path / "out.jsonl")
    with log:
        async with Orchestrator(scripted, close_engines=False) as orch:
            with anyio.fail_after(5), pytest.raises(EngineDeadError, match="gone"):
                await run_batch(orch, requests_for(["fast", "slow", "dies"]), log, concurrency=2)
            assert not scripted.running
    assert [json.loads(line)["prompt"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["fast"]


async def test_generate_samples_gives_each_item_its_candidates_in_plan_order_and_a_greedy_one(
    scripted: ScriptedEngine,
) -> None:
    scripted.respond = lambda prompt, params, rid: Step(
        text=f"{prompt[-1].content}:{params.seed}:{params.temperature}",  # type: ignore[union-attr]
        delay=0.01 * ((params.seed or 0) % 3),
    )
    items = [EvalItem(id=f"item{k}", prompt=f"q{k}", gold=["1"]) for k in range(4)]
    ladder = strategies.TemperatureLadder(0.5, 1.0)
    done: list[str] = []
    async with Orchestrator(scripted, close_engines=False) as orch:
        samples = await generate_samples(
            orch,
            items,
            n=3,
            params=SamplingParams(max_tokens=8),
            strategy=ladder,
            greedy=True,
            concurrency=2,
            on_done=lambda sample: done.append(sample.item.id),
        )
        # what each item's requests give when run one by one, unranked
        expected = []
        for sample in samples:
            alone = [c async for c in orch.stream_request(sample.request, strategy=ladder)]
            expected.append(sorted(alone, key=lambda c: c.index))
    assert [s.item.id for s in samples] == [it.id for it in items] and sorted(done) == sorted(it.id for it in items)
    for sample, alone in zip(samples, expected, strict=True):
        assert sample.request.id == sample.item.id and sample.request.params.seed == 0  # no seed given: seed 0
        assert [c.index for c in sample.candidates] == [0, 1, 2]
        assert [(c.text, c.spec) for c in sample.candidates] == [(c.text, c.spec) for c in alone]
        assert [c.spec.params.temperature for c in sample.candidates] == [0.5, 0.75, 1.0]
        assert sample.greedy is not None and sample.greedy.text == f"{sample.item.prompt}:0:0.0"
        assert sample.greedy.spec == strategies.Fixed().plan(sample.request.model_copy(update={"n": 1}))[0].model_copy(
            update={"params": sample.request.params.model_copy(update={"temperature": 0.0})}
        )
    greedy_calls = [c.request_id for c in scripted.history if c.request_id.endswith("-greedy-0")]
    assert sorted(greedy_calls) == sorted(f"{it.id}-greedy-0" for it in items)
    assert scripted.max_running <= 2 * 2 * 3  # at most 2 x concurrency requests: samples and greedy ones
