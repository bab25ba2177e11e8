"""Adaptive early stopping on the scripted engine: waves, stopping, cancellation."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from nbest import ConfigError, EngineDeadError, Orchestrator, rerankers, stopping
from nbest.types import Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step

pytestmark = pytest.mark.asyncio(loop_scope="session")

SLOW = 30.0  # a candidate that would take this long must be cancelled, never awaited


def by_index(answers: dict[int, str], delays: dict[int, float] | None = None) -> Callable[[Prompt, SamplingParams, str], Step]:
    """Reply to candidate i (from its request id) with ``answers[i]`` after ``delays[i]`` s."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        i = int(request_id.rsplit("-", 1)[1])
        return Step(text=f"The answer is {answers.get(i, '0')}.", delay=(delays or {}).get(i, 0.0))

    return respond


def indices(ids: list[str]) -> list[int]:
    return sorted(int(r.rsplit("-", 1)[1]) for r in ids)


async def test_stops_after_the_wave_that_settles_it_and_cancels_the_next(scripted: ScriptedEngine) -> None:
    # wave 0: 51 51 51 52 -> Beta(3+1, 1+1) gives 0.8125 < 0.95
    # wave 1: 51 x4       -> votes 7:1, P = 502/512 = 0.98 >= 0.95: stop
    # wave 2 generates meanwhile (slowly): it must be aborted, never awaited
    answers = {i: "51" for i in range(32)} | {3: "52"}
    scripted.respond = by_index(answers, {i: SLOW for i in range(8, 32)})
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate(
            "17 * 3?", n=32, seed=1, until=stopping.Beta(0.95), wave=4, rerankers=[rerankers.MajorityVote(extract="number")]
        )
    assert result.samples_used == 8
    assert result.n == 32
    assert sorted(c.index for c in result.candidates) == list(range(8))
    assert [(a.answer, len(a.support)) for a in result.answers] == [("51", 7), ("52", 1)]
    assert result.best is not None and "51" in result.best.text
    assert indices([call.request_id for call in scripted.history]) == list(range(12))  # one wave ahead, no more
    assert indices(scripted.aborted) == [8, 9, 10, 11]
    assert indices(scripted.finished) == list(range(8))
    assert result.usage.completion_tokens == 8 * 4  # the result's candidates only


@pytest.mark.parametrize(
    ("answers", "wave", "used"),
    [
        (["7"] * 4, 4, 4),  # unanimous first wave: 31/32 >= 0.95
        (["7", "7", "7", "8"] + ["7"] * 4, 4, 8),
        (["7"] * 4, 1, 4),  # one at a time: 3/4, 7/8, 15/16, 31/32
        (["7", "8"] + ["7"] * 7, 3, 9),  # 2:1 (0.69), 5:1 (0.94), 8:1 (0.99)
        (["1", "2"] * 5, 4, 10),  # never settles: every wave runs, the last one short
    ],
)
async def test_samples_used_is_exact(scripted: ScriptedEngine, answers: list[str], wave: int, used: int) -> None:
    scripted.respond = by_index({i: str(100 + i) for i in range(40)} | dict(enumerate(answers)))
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate(
            "q", n=max(len(answers), 10), seed=3, until=stopping.Beta(0.95), wave=wave, rerankers=[rerankers.MajorityVote()]
        )
    assert result.samples_used == used
    assert sorted(c.index for c in result.candidates) == list(range(used))


async def test_dirichlet_needs_more_waves_than_beta_with_several_rivals(scripted: ScriptedEngine) -> None:
    # 4:1:1 after wave 1 (wave=3): Beta gives 57/64 = 0.89, Dirichlet 0.81
    answers = dict(enumerate(["5", "5", "6", "5", "5", "9"] + ["5"] * 12))
    used = {}
    for rule in (stopping.Beta(0.85), stopping.Dirichlet(0.85)):
        scripted.respond = by_index(answers)
        async with Orchestrator(scripted, close_engines=False) as orch:
            result = await orch.generate("q", n=18, seed=0, until=rule, wave=3, rerankers=[rerankers.MajorityVote()])
        used[type(rule).__name__] = result.samples_used
    # Dirichlet after wave 2: 7:1:1 -> 0.95 >= 0.85
    assert used == {"Beta": 6, "Dirichlet": 9}


async def test_confidence_rule_with_the_default_ranker(scripted: ScriptedEngine) -> None:
    # no vote reranker: answers are grouped by normalised text, confidence = sum of softmax shares
    scripted.respond = by_index({i: "same" for i in range(16)})
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate("q", n=16, seed=0, until=stopping.Confidence(0.99), wave=4)
    assert result.samples_used == 4  # one answer holds all the confidence after the first wave
    assert result.answers[0].confidence == pytest.approx(1.0)


async def test_failed_candidates_count_as_used_and_vote_for_nothing(scripted: ScriptedEngine) -> None:
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        i = int(request_id.rsplit("-", 1)[1])
        return Step(error=RuntimeError("boom")) if i == 1 else Step(text="42")

    scripted.respond = respond
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate("q", n=12, seed=0, until=stopping.Beta(0.95), wave=4, rerankers=[rerankers.MajorityVote()])
    # wave 0: 3 votes (15/16 = 0.9375), wave 1: 7 votes -> stop
    assert result.samples_used == 8
    assert [c.index for c in result.failed] == [1]
    assert [len(a.support) for a in result.answers] == [7]


async def test_timeout_covers_all_waves(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index({i: str(i) for i in range(16)}, {i: SLOW for i in range(4, 16)})
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate("q", n=16, seed=0, until=stopping.Beta(0.95), wave=4, timeout=0.5)
    # wave 0 done; waves 1 (and 2, already started ahead) time out at the deadline; no wave starts after it
    assert result.samples_used == 12
    assert sorted(c.index for c in result.failed) == list(range(4, 12))
    assert {c.finish_reason for c in result.failed} == {"timeout"}
    assert indices([call.request_id for call in scripted.history]) == list(range(12))


async def test_a_dead_engine_stops_everything(scripted: ScriptedEngine) -> None:
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        i = int(request_id.rsplit("-", 1)[1])
        if i == 5:
            return Step(error=EngineDeadError("gone"))
        return Step(text=str(i), delay=0.05 if i < 4 else SLOW)

    scripted.respond = respond
    async with Orchestrator(scripted, close_engines=False) as orch:
        with pytest.raises(EngineDeadError, match="gone"):
            await orch.generate("q", n=16, seed=0, until=stopping.Beta(0.95), wave=4)
    # wave 1 died while wave 0 ran: its other candidates are aborted and no wave starts after it
    assert indices(scripted.aborted) == [4, 6, 7]
    assert indices([call.request_id for call in scripted.history]) == list(range(8))


async def test_cancelling_the_caller_aborts_running_waves(scripted: ScriptedEngine) -> None:
    scripted.respond = by_index({i: str(i) for i in range(16)}, {i: SLOW for i in range(16)})
    async with Orchestrator(scripted, close_engines=False) as orch:
        with anyio.move_on_after(0.2):
            await orch.generate("q", n=16, seed=0, until=stopping.Beta(0.95), wave=4)
    assert indices(scripted.aborted) == list(range(8))


async def test_stop_strings_still_work_beside_the_rule(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        await orch.generate("q", n=2, stop="\n")
        await orch.generate("q", n=2, stop=["END"], seed=0)
    assert [call.params.stop for call in scripted.history] == [["\n"], ["\n"], ["END"], ["END"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wave": 4}, "wave: only used with a stopping rule"),
        ({"wave": 0, "until": stopping.Beta(0.9)}, "wave: must be a whole number >= 1"),
        ({"wave": 2.5, "until": stopping.Beta(0.9)}, "wave: must be a whole number >= 1"),
    ],
)
async def test_bad_wave_settings_are_rejected_before_generating(
    scripted: ScriptedEngine, kwargs: dict[str, object], message: str
) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        with pytest.raises(ConfigError, match=message):
            await orch.generate("q", n=8, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="is not a stopping rule"):
            await orch.run(orch.request("q", 8), until="beta:0.9", wave=4)  # type: ignore[arg-type]
    assert scripted.history == []


async def test_a_rule_given_as_stop_says_to_use_until(scripted: ScriptedEngine) -> None:
    rule = stopping.Beta(0.9)
    message = r"stop: takes stop strings; Beta\(threshold=0.9\) is a stopping rule: pass it as until="
    async with Orchestrator(scripted, close_engines=False) as orch:
        for call in (
            lambda: orch.generate("q", n=8, stop=rule),  # type: ignore[arg-type]
            lambda: orch.generate_many(["q"], n=8, stop=rule),  # type: ignore[arg-type]
        ):
            with pytest.raises(ConfigError, match=message):
                await call()
        with pytest.raises(ConfigError, match="pass it as until="):
            orch.request("q", 8, stop=rule)  # type: ignore[arg-type]
    assert scripted.history == []


def test_the_blocking_generate_checks_until_before_any_engine_starts() -> None:
    import nbest

    with pytest.raises(ConfigError, match="pass it as until="):
        nbest.generate("q", n=8, stop=stopping.Beta(0.9))
    with pytest.raises(ConfigError, match="wave: only used with a stopping rule"):
        nbest.generate("q", n=8, wave=4)


async def test_many_prompts_stop_each_on_its_own(scripted: ScriptedEngine) -> None:
    # "agree": every candidate says 51, one wave settles it; "split": 3:1 after the first wave, 7:1 after two
    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        i = int(request_id.rsplit("-", 1)[1])
        return Step(text="The answer is 52." if "split" in str(prompt) and i == 1 else "The answer is 51.")

    scripted.respond = respond
    vote = [rerankers.MajorityVote(extract="number")]
    async with Orchestrator(scripted, close_engines=False) as orch:
        results = await orch.generate_many(["agree", "split"], n=16, seed=0, until=stopping.Beta(0.95), wave=4, rerankers=vote)
        requests = [orch.request("agree", 16, seed=0), orch.request("split", 16, seed=0)]
        finished = {i: r async for i, r in orch.as_completed(requests, until=stopping.Beta(0.95), wave=4, rerankers=vote)}
    assert [r.samples_used for r in results] == [4, 8]
    assert [finished[i].samples_used for i in range(2)] == [4, 8]


async def test_without_a_rule_samples_used_is_none(scripted: ScriptedEngine) -> None:
    async with Orchestrator(scripted, close_engines=False) as orch:
        result = await orch.generate("q", n=3)
    assert result.samples_used is None
    assert "samples_used" in result.model_dump()
