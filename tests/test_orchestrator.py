"""Orchestration logic on a scripted engine: fan-out, streaming, limits,
timeouts, cancellation, failures."""

from __future__ import annotations

import anyio
import pytest

from nbest import ConfigError, EngineDeadError, GenerationError, NbestError, Orchestrator, strategies
from nbest.orchestrator import SamplingKwargs
from nbest.types import CandidateSpec, Request, SamplingParams
from tests.scripted import ScriptedEngine, Step

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_generate_ranks_by_mean_logprob_and_keeps_every_candidate(scripted: ScriptedEngine) -> None:
    for lp in (-2.0, -0.5, -1.0):
        scripted.enqueue(f"text {lp}", mean_logprob=lp)
    async with Orchestrator(scripted) as orch:
        result = await orch.generate("q", n=3, seed=10)
    assert [c.text for c in result.candidates] == ["text -0.5", "text -1.0", "text -2.0"]
    assert [c.rank for c in result.candidates] == [1, 2, 3]
    assert result.best is not None and result.best.text == "text -0.5"
    assert sum(c.confidence or 0 for c in result.candidates) == pytest.approx(1.0)
    assert result.candidates[0].scores == {"mean_logprob": -0.5}
    assert result.usage.completion_tokens == 12 and result.usage.prompt_tokens == 9
    assert scripted.closed  # close_engines defaults to True


async def test_seeds_are_distinct_and_reproducible(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        first = await orch.generate("q", n=4, seed=100)
        second = await orch.generate("q", n=4, seed=100)
        unseeded = await orch.generate("q", n=4)
    seeds = sorted(c.spec.params.seed for c in first.candidates if c.spec.params.seed is not None)
    assert seeds == [100, 101, 102, 103]
    assert sorted(c.text for c in first.candidates) == sorted(c.text for c in second.candidates)
    drawn = [c.spec.params.seed for c in unseeded.candidates]
    assert None not in drawn and len(set(drawn)) == 4  # a seed is drawn and recorded: replayable


async def test_stream_yields_candidates_in_finishing_order(scripted: ScriptedEngine) -> None:
    scripted.enqueue("slow", delay=0.3).enqueue("fast", delay=0.0).enqueue("middle", delay=0.1)
    async with Orchestrator(scripted) as orch:
        texts = [c.text async for c in orch.stream("q", n=3)]
    assert texts == ["fast", "middle", "slow"]


async def test_in_flight_limit_is_respected(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(text=rid, delay=0.02)
    async with Orchestrator(scripted, max_in_flight=3) as orch:
        results = await orch.generate_many(["a", "b", "c"], n=5, concurrency=3)
    assert scripted.max_running == 3
    assert [len(r.candidates) for r in results] == [5, 5, 5]
    assert [r.prompt for r in results] == ["a", "b", "c"]


async def test_generate_many_bounds_prompts_in_progress(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(text=rid, delay=0.02)
    async with Orchestrator(scripted) as orch:
        await orch.generate_many([f"p{i}" for i in range(6)], n=2, concurrency=2)
    assert scripted.max_running == 4  # 2 prompts x 2 candidates


async def test_one_failing_candidate_does_not_sink_the_rest(scripted: ScriptedEngine) -> None:
    scripted.enqueue("a").enqueue("b", error=GenerationError("out of memory")).enqueue("c", error=RuntimeError("boom"))
    scripted.enqueue("d")
    async with Orchestrator(scripted) as orch:
        result = await orch.generate("q", n=4)
    ok = [c for c in result.candidates if c.ok]
    assert sorted(c.text for c in ok) == ["a", "d"]
    assert [c.rank for c in result.candidates] == [1, 2, None, None]
    errors = {c.index: c.error for c in result.failed}
    assert errors == {1: "GenerationError: out of memory", 2: "RuntimeError: boom"}
    assert all(c.finish_reason == "error" for c in result.failed)


async def test_all_failed_gives_no_best(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(error=GenerationError("nope"))
    async with Orchestrator(scripted) as orch:
        result = await orch.generate("q", n=2)
    assert result.best is None and len(result.failed) == 2


async def test_dead_engine_stops_the_fan_out(scripted: ScriptedEngine) -> None:
    scripted.enqueue("a", delay=5).enqueue("b", error=EngineDeadError("gone"))
    async with Orchestrator(scripted) as orch:
        with pytest.raises(EngineDeadError, match="gone"):
            await orch.generate("q", n=2)
    assert scripted.aborted == [scripted.history[0].request_id]


async def test_timeout_keeps_finished_and_marks_the_rest(scripted: ScriptedEngine) -> None:
    scripted.enqueue("fast").enqueue("slow", delay=10).enqueue("slower", delay=20)
    async with Orchestrator(scripted) as orch:
        with anyio.fail_after(5):
            result = await orch.generate("q", n=3, timeout=0.2)
    assert [c.text for c in result.candidates if c.ok] == ["fast"]
    assert {c.index: c.finish_reason for c in result.failed} == {1: "timeout", 2: "timeout"}
    assert all("timed out after 0.2 s" in (c.error or "") for c in result.failed)
    assert sorted(scripted.aborted) == sorted(call.request_id for call in scripted.history[1:])


async def test_cancelling_the_caller_aborts_every_engine_request(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=30)
    async with Orchestrator(scripted) as orch:
        with anyio.move_on_after(0.2):
            await orch.generate("q", n=5)
        assert sorted(scripted.aborted) == sorted(call.request_id for call in scripted.history)
        assert len(scripted.aborted) == 5 and not scripted.running


async def test_leaving_a_stream_early_aborts_the_rest(scripted: ScriptedEngine) -> None:
    scripted.enqueue("fast").enqueue("slow", delay=30).enqueue("slow", delay=30)
    async with Orchestrator(scripted) as orch:
        stream = orch.stream("q", n=3)
        async for candidate in stream:
            assert candidate.text == "fast"
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert len(scripted.aborted) == 2 and not scripted.running


async def test_exiting_the_orchestrator_aborts_running_requests(scripted: ScriptedEngine) -> None:
    scripted.respond = lambda prompt, params, rid: Step(delay=30)
    async with Orchestrator(scripted) as orch:

        async def consume() -> None:
            async for _ in orch.stream("q", n=2):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    assert len(scripted.aborted) == 2 and scripted.closed


async def test_validation_happens_before_any_generation(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted, max_n=4) as orch:
        with pytest.raises(ConfigError, match="n: at most 4"):
            await orch.generate("q", n=5)
        with pytest.raises(ConfigError, match="top_p"):
            await orch.generate("q", n=2, top_p=0)
        with pytest.raises(ConfigError, match=r"prompts\[1\]: prompt must not be empty"):
            await orch.generate_many(["ok", " "], n=2)
        with pytest.raises(ConfigError, match="timeout"):
            await orch.generate("q", n=2, timeout=0)
    assert scripted.history == []


async def test_unknown_engine_in_plan_is_a_config_error(scripted: ScriptedEngine) -> None:
    async with Orchestrator({"a": scripted}) as orch:
        with pytest.raises(ConfigError, match="unknown engine 'b'; known: a, default"):
            await orch.generate("q", n=2, strategy=strategies.Fixed(engine="b"))


async def test_a_plan_of_the_wrong_size_is_rejected(scripted: ScriptedEngine) -> None:
    class Short:
        def plan(self, request: Request) -> list[CandidateSpec]:
            return strategies.Fixed().plan(request)[:-1]

    async with Orchestrator(scripted) as orch:
        with pytest.raises(ConfigError, match="planned indices"):
            await orch.generate("q", n=3, strategy=Short())


async def test_candidates_go_to_the_engine_their_spec_names() -> None:
    a, b = ScriptedEngine(name="a"), ScriptedEngine(name="b")

    class Split:
        def plan(self, request: Request) -> list[CandidateSpec]:
            return [s.model_copy(update={"engine": "a" if s.index % 2 else "b"}) for s in strategies.Fixed().plan(request)]

    async with Orchestrator({"a": a, "b": b}) as orch:
        result = await orch.generate("q", n=4, strategy=Split())
    assert len(a.history) == 2 and len(b.history) == 2
    assert {c.index: c.spec.engine for c in result.candidates} == {0: "b", 1: "a", 2: "b", 3: "a"}
    assert a.closed and b.closed


async def test_chat_prompt_reaches_the_engine_rendered(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted) as orch:
        await orch.generate("Hi", n=1, system="Be brief")
        await orch.run(Request(prompt="raw", n=1, chat=False))
    chat, raw = scripted.history
    assert [(m.role, m.content) for m in chat.prompt] == [("system", "Be brief"), ("user", "Hi")]  # type: ignore[union-attr]
    assert raw.prompt == "raw"


async def test_using_it_outside_async_with_is_a_clear_error(scripted: ScriptedEngine) -> None:
    orch = Orchestrator(scripted)
    with pytest.raises(NbestError, match="async with"):
        await orch.generate("q", n=1)


def test_constructor_validation(scripted: ScriptedEngine) -> None:
    with pytest.raises(ConfigError, match="max_in_flight"):
        Orchestrator(scripted, max_in_flight=0)
    with pytest.raises(ConfigError, match="at least one engine"):
        Orchestrator({})
    with pytest.raises(ConfigError, match="not an Engine"):
        Orchestrator(object())  # type: ignore[arg-type]


def test_the_sampling_keywords_are_every_sampling_param() -> None:
    # SamplingKwargs types the keywords of request/generate/stream/generate_many by hand: keep it whole
    keywords = SamplingKwargs.__required_keys__ | SamplingKwargs.__optional_keys__
    fields = set(SamplingParams.model_fields)
    assert not fields - keywords, f"add to SamplingKwargs (nbest/orchestrator/core.py): {sorted(fields - keywords)}"
    assert not keywords - fields, f"not SamplingParams fields, drop from SamplingKwargs: {sorted(keywords - fields)}"


async def test_every_sampling_keyword_reaches_the_engine(scripted: ScriptedEngine) -> None:
    given = {"temperature": 0.5, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "seed": 4, "max_tokens": 7, "stop": "END",
             "presence_penalty": 0.5, "frequency_penalty": 0.25, "repetition_penalty": 1.1, "ignore_eos": True,
             "top_logprobs": 2}  # fmt: skip
    assert set(given) == set(SamplingParams.model_fields)
    async with Orchestrator(scripted) as orch:
        await orch.generate("q", n=1, **given)  # type: ignore[arg-type]
    sent = scripted.history[0].params
    assert sent.model_dump() == SamplingParams(**given).model_dump()
