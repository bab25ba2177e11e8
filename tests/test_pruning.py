"""Online pruning (DeepConf online) on a scripted engine: exact decisions on hand-made token streams.

Every stream is built with :func:`tests.scripted.toks`, which gives each token an exact
DeepConf token confidence (minus the mean log-probability of its two alternatives), so
each group confidence and threshold below can be computed by hand.
"""

from __future__ import annotations

import math

import anyio
import pytest

from nbest import ConfigError, Orchestrator
from nbest.cli.options import EngineOptions
from nbest.engines.base import Engine
from nbest.orchestrator import stopping
from nbest.orchestrator.pruning import PRUNE_TOP_LOGPROBS, Prune, PruneRun, quantile, warmup_confidence
from nbest.rerankers.vote import MajorityVote
from nbest.types import Candidate, CandidateSpec, Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step, toks

pytestmark = pytest.mark.asyncio(loop_scope="session")

# window 2 throughout: a group is the mean confidence of two consecutive tokens
POLICY = Prune(keep=0.5, warmup=2, window=2)

# warm-up 0: confidences 3, 3, 2, 2 -> groups 3.0, 2.5, 2.0 -> lowest 2.0
WARM_LOW = toks([("The answer", 3.0), (" is", 3.0), (" 4", 2.0), (".", 2.0)])
# warm-up 1: confidences 4, 4, 3, 3 -> groups 4.0, 3.5, 3.0 -> lowest 3.0
WARM_HIGH = toks([("The answer", 4.0), (" is", 4.0), (" 4", 3.0), (".", 3.0)])
# threshold = the 1 - 0.5 quantile of [2.0, 3.0] = 2.5
THRESHOLD = 2.5
# a later candidate whose third token drops the group to (3 + 1) / 2 = 2.0 < 2.5: pruned after 3 tokens
WEAK = toks([("The answer", 3.0), (" is", 3.0), (" 7", 1.0), (".", 1.0), (" Sure", 1.0)])
# a later candidate whose lowest group is (2.6 + 2.6) / 2 = 2.6 >= 2.5: kept
STRONG = toks([("The answer", 3.0), (" is", 2.6), (" 4", 2.6), (".", 3.0)])


def scripted_by_index(steps: dict[int, Step]) -> ScriptedEngine:
    """A scripted engine answering candidate ``i`` of any request with ``steps[i]``."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        return steps[int(request_id.rsplit("-", 1)[1])]

    return ScriptedEngine(respond=respond)


def four() -> dict[int, Step]:
    return {
        0: Step(stream=WARM_LOW, token_delay=0.01),
        1: Step(stream=WARM_HIGH, token_delay=0.01),
        2: Step(stream=WEAK, token_delay=0.01),
        3: Step(stream=STRONG, token_delay=0.01),
    }


def test_toks_give_the_confidence_asked_for() -> None:
    (tok,) = toks([("x", 2.5)])
    assert -sum(tok.top.values()) / len(tok.top) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([2.0, 3.0], 0.5, 2.5),
        ([2.0, 3.0], 0.0, 2.0),  # keep = 1: the lowest warm-up value
        ([2.0, 3.0], 0.9, 2.9),  # keep = 0.1 (DeepConf-low)
        ([1.0, 2.0, 3.0, 4.0], 0.1, 1.3),  # h = 0.3: 1 + 0.3 * (2 - 1)
        ([5.0, 1.0, 3.0], 0.25, 2.0),  # sorted 1, 3, 5; h = 0.5: 1 + 0.5 * (3 - 1)
        ([7.0], 0.9, 7.0),
    ],
)
def test_quantile_is_linear_between_order_statistics(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == pytest.approx(expected)


def _finished(index: int, stream: list, window_tokens: bool = True) -> Candidate:  # type: ignore[type-arg]
    spec = CandidateSpec(index=index, params=SamplingParams(top_logprobs=2))
    return Candidate(
        index=index,
        spec=spec,
        text="".join(t.text for t in stream),
        num_tokens=len(stream),
        token_logprobs=[t.logprob for t in stream],
        top_logprobs=[t.top for t in stream] if window_tokens else None,
        finish_reason="stop",
    )


def test_threshold_from_warmup_by_hand() -> None:
    assert warmup_confidence(_finished(0, WARM_LOW), 2) == pytest.approx(2.0)
    assert warmup_confidence(_finished(1, WARM_HIGH), 2) == pytest.approx(3.0)
    # shorter than a window: the whole text's group, (3 + 3 + 2 + 2) / 4
    assert warmup_confidence(_finished(0, WARM_LOW), 16) == pytest.approx(2.5)
    assert warmup_confidence(_finished(0, WARM_LOW, window_tokens=False), 2) is None  # no alternatives: skipped
    run = PruneRun(POLICY, [0, 1])
    run.warmup_done(1, _finished(1, WARM_HIGH))
    assert not run.ready and run.threshold is None
    run.warmup_done(0, _finished(0, WARM_LOW))
    assert run.ready and run.threshold == pytest.approx(THRESHOLD)
    keep_all = PruneRun(Prune(keep=1.0, warmup=2, window=2), [0, 1])
    keep_all.warmup_done(0, _finished(0, WARM_LOW))
    keep_all.warmup_done(1, None)  # cancelled: not counted
    assert keep_all.threshold == pytest.approx(2.0) and keep_all.values == {0: pytest.approx(2.0)}


async def test_later_candidate_is_aborted_at_the_token_its_group_falls_below() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY)
    by_index = {c.index: c for c in result.candidates}
    weak, strong = by_index[2], by_index[3]
    assert weak.pruned and weak.finish_reason == "pruned"
    assert weak.num_tokens == 3 and weak.text == "The answer is 7"
    assert weak.token_logprobs == [-0.1, -0.1, -0.1] and weak.top_logprobs is not None and len(weak.top_logprobs) == 3
    assert weak.signals is not None and weak.signals["lowest_group"] < THRESHOLD
    assert weak.rank is None and weak.confidence is None and weak.error is None
    rid = f"{result.id}-2"
    assert engine.aborted == [rid] and engine.yielded[rid] == 3 and rid not in engine.finished
    assert not strong.pruned and strong.finish_reason == "stop" and strong.num_tokens == 4
    # its signals use the default window (at least 8 tokens): one group, the mean (3 + 2.6 + 2.6 + 3) / 4
    assert strong.signals is not None and strong.signals["lowest_group"] == pytest.approx(2.8)
    # ranked complete candidates first, then the pruned one; best is never pruned
    assert [c.index for c in result.candidates][-1] == 2 and [c.rank for c in result.candidates] == [1, 2, 3, None]
    assert result.best is not None and not result.best.pruned
    assert result.usage.completion_tokens == 4 + 4 + 3 + 4  # the pruned candidate's tokens count
    assert result.usage.prompt_tokens == 4 * 3
    assert result.warnings == []


async def test_warmup_runs_first_and_later_candidates_stream_tokens() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine, max_in_flight=2) as orch:
        await orch.generate("q", n=4, seed=1, prune=POLICY)
    calls = {int(c.request_id.rsplit("-", 1)[1]): c for c in engine.history}
    assert not calls[0].tokens and not calls[1].tokens  # warm-up: generated in full
    assert calls[2].tokens and calls[3].tokens  # later: watched token by token
    assert calls[2].finished_before == 2 and calls[3].finished_before == 2  # sent only once warm-up ended
    # top_logprobs 0 asked for: raised so that group confidence can be computed; the specs say so
    assert {c.params.top_logprobs for c in engine.history} == {PRUNE_TOP_LOGPROBS}


async def test_top_logprobs_asked_for_are_kept() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY, top_logprobs=2)
    assert {c.spec.params.top_logprobs for c in result.candidates} == {2}
    assert [c.index for c in result.candidates if c.pruned] == [2]


async def test_pruned_candidate_does_not_vote() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine, rerankers=[MajorityVote(extract="number")]) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY)
    # three complete candidates say 4; the pruned one's partial "7" is not a vote
    assert [(a.answer, a.support) for a in result.answers] == [("4", [0, 1, 3])]
    assert result.answers[0].confidence == pytest.approx(1.0)
    ranked = [c for c in result.candidates if c.rank is not None]
    assert [c.scores["vote"] for c in ranked] == [pytest.approx(1.0)] * 3
    assert result.candidates[-1].pruned and result.candidates[-1].scores == {}


async def test_a_candidate_that_stays_above_is_not_pruned() -> None:
    steps = four()
    steps[2] = Step(stream=STRONG, token_delay=0.01)
    engine = scripted_by_index(steps)
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY)
    assert not any(c.pruned for c in result.candidates) and engine.aborted == []
    assert all(c.finish_reason == "stop" for c in result.candidates)


async def test_stream_yields_the_pruned_candidate() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine) as orch:
        seen = [c async for c in orch.stream("q", n=4, seed=1, prune=POLICY)]
    assert sorted(c.index for c in seen) == [0, 1, 2, 3]
    assert [c.index for c in seen if c.pruned] == [2]


async def test_n_at_most_warmup_is_a_plain_run() -> None:
    engine = scripted_by_index(four())
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=2, seed=1, prune=POLICY)
    assert not any(call.tokens for call in engine.history)
    assert {c.spec.params.top_logprobs for c in result.candidates} == {0}  # nothing raised: nothing to prune
    assert not any(c.pruned for c in result.candidates)


async def test_no_usable_warmup_means_no_pruning_and_a_warning() -> None:
    steps = four()
    steps[0] = Step("4", error=RuntimeError("boom"))
    steps[1] = Step("4", tokens=3)  # no token stream: no alternatives to compute a group from
    engine = scripted_by_index(steps)
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY)
    assert not any(c.pruned for c in result.candidates) and engine.aborted == []
    assert any(w.startswith("prune: no warm-up candidate") for w in result.warnings)


async def test_signals_on_every_candidate_with_token_logprobs(scripted: ScriptedEngine) -> None:
    scripted.enqueue("a", mean_logprob=-0.5, tokens=2)
    async with Orchestrator(scripted) as orch:
        result = await orch.generate("q", n=1, seed=1)
    assert result.candidates[0].signals == pytest.approx({"mean_logprob": -0.5})


class NoTokens(ScriptedEngine):
    token_updates = False


async def test_engine_without_token_updates_is_refused_before_generating() -> None:
    engine = NoTokens(name="quiet")
    async with Orchestrator({"quiet": engine}) as orch:
        with pytest.raises(ConfigError, match=r"route 'default' \(engine 'quiet', NoTokens\) cannot report tokens") as info:
            await orch.generate("q", n=4, prune=POLICY)
        assert info.value.parameter == "prune"
        with pytest.raises(ConfigError, match=r"prompts\[0\]: prune: .*cannot report tokens"):
            await orch.generate_many(["q"], n=4, prune=POLICY)
        await orch.generate("q", n=2, prune=POLICY)  # n <= warmup: nothing to prune, nothing refused
    assert len(engine.history) == 2


@pytest.mark.parametrize("bad", ["0.9", 0.9, {"keep": 0.9}, True])
async def test_prune_must_be_a_policy(scripted: ScriptedEngine, bad: object) -> None:
    async with Orchestrator(scripted) as orch:
        for call in (
            lambda: orch.generate("q", n=4, prune=bad),  # type: ignore[arg-type]
            lambda: orch.generate_many(["q"], n=4, prune=bad),  # type: ignore[arg-type]
        ):
            with pytest.raises(ConfigError, match="prune: expected a Prune policy") as info:
                await call()
            assert info.value.parameter == "prune"
    assert scripted.history == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"keep": 0}, "keep"), ({"keep": 1.5}, "keep"), ({"warmup": 0}, "warmup"), ({"window": 10**6}, "window")],
)
def test_prune_values_out_of_range(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"prune\.{field}"):
        Prune(**kwargs)  # type: ignore[arg-type]


def _waves(steps_after_warmup: dict[int, Step]) -> ScriptedEngine:
    steps = {0: Step(stream=WARM_LOW, token_delay=0.01), 1: Step(stream=WARM_HIGH, token_delay=0.01)}
    steps.update(steps_after_warmup)
    return scripted_by_index(steps)


async def test_waves_and_a_stopping_rule_count_complete_candidates_only() -> None:
    # wave 0: the warm-up, "4" twice: Beta P = 1 - 0.5**3 = 0.875 < 0.9, go on.
    # wave 1: candidate 2 pruned (its "7" would make it 3:1, P = 0.8125), candidate 3 says "4":
    # 3 votes to 0, P = 1 - 0.5**4 = 0.9375 >= 0.9: stop. Wave 2 was generating meanwhile (fast).
    fast = toks([("The answer", 3.0), (" is", 3.0), (" 4", 3.0), (".", 3.0)])
    engine = _waves(
        {
            2: Step(stream=WEAK, token_delay=0.01),
            3: Step(stream=STRONG, token_delay=0.05),
            4: Step(stream=fast),
            5: Step(stream=fast),
            6: Step(stream=fast, token_delay=5.0),
            7: Step(stream=fast, token_delay=5.0),
        }
    )
    async with Orchestrator(engine, rerankers=[MajorityVote(extract="number")]) as orch:
        result = await orch.generate("q", n=8, seed=1, prune=POLICY, until=stopping.Beta(0.9), wave=2)
    assert result.samples_used == 4
    assert [c.index for c in result.candidates if c.pruned] == [2]
    assert [(a.answer, a.support) for a in result.answers] == [("4", [0, 1, 3])]
    # usage: the four listed (4 + 4 + 3 + 4) and the cancelled wave's two that had finished (4 + 4)
    assert result.usage.completion_tokens == 4 + 4 + 3 + 4 + 4 + 4
    assert not any(call.request_id.endswith(("-6", "-7")) for call in engine.history)


async def test_a_stopped_wave_counts_the_tokens_its_cancelled_requests_streamed() -> None:
    steady = toks([(f" w{i}", 3.0) for i in range(200)])
    engine = _waves(
        {
            2: Step(stream=STRONG, token_delay=0.05),
            3: Step(stream=STRONG, token_delay=0.05),
            4: Step(stream=steady, token_delay=0.01),
            5: Step(stream=steady, token_delay=0.01),
        }
    )
    async with Orchestrator(engine, rerankers=[MajorityVote(extract="number")]) as orch:
        result = await orch.generate("q", n=6, seed=1, prune=POLICY, until=stopping.Beta(0.9), wave=2)
    assert result.samples_used == 4
    listed = sum(c.num_tokens for c in result.candidates)
    streamed = engine.yielded[f"{result.id}-4"] + engine.yielded[f"{result.id}-5"]
    assert 0 < streamed < 400  # cancelled mid-generation
    # each streamed token was reported in a partial update; the last may not have been recorded yet
    assert listed + streamed - 2 <= result.usage.completion_tokens <= listed + streamed
    assert {f"{result.id}-4", f"{result.id}-5"} <= set(engine.aborted)


async def test_esc_windows_run_over_complete_candidates() -> None:
    # complete candidates in plan order: 0 "4", 1 "5", 3 "4", 4 "4", 5 "7" -> windows of two:
    # [4, 5], [4, 4]: the second agrees once candidate 4 is in (wave 2). Counting the pruned
    # candidate 2 as a broken vote would give [4, 5], [-, 4], [4, 7] and no stop.
    five = toks([("The answer", 4.0), (" is", 4.0), (" 5", 3.0), (".", 3.0)])
    seven = toks([("The answer", 3.0), (" is", 3.0), (" 7", 3.0), (".", 3.0)])
    engine = scripted_by_index(
        {
            0: Step(stream=WARM_LOW, token_delay=0.01),
            1: Step(stream=five, token_delay=0.01),
            2: Step(stream=WEAK, token_delay=0.01),
            3: Step(stream=STRONG, token_delay=0.01),
            4: Step(stream=STRONG, token_delay=0.01),
            5: Step(stream=seven, token_delay=0.01),
            6: Step(stream=seven, token_delay=0.01),
            7: Step(stream=seven, token_delay=0.01),
        }
    )
    async with Orchestrator(engine, rerankers=[MajorityVote(extract="number")]) as orch:
        result = await orch.generate("q", n=8, seed=1, prune=POLICY, until=stopping.ESC(2))
    assert result.samples_used == 6
    assert [c.index for c in result.candidates if c.pruned] == [2]
    assert {a.answer: a.support for a in result.answers} == {"4": [0, 3, 4], "5": [1], "7": [5]}


async def test_warmup_spanning_waves_holds_later_waves() -> None:
    policy = Prune(keep=0.5, warmup=3, window=2)  # threshold: the median of 2.0, 3.0, 3.0 = 3.0
    sure = toks([("The answer", 3.5), (" is", 3.5), (" 4", 3.5), (".", 3.5)])
    engine = _waves(
        {
            2: Step(stream=WARM_HIGH, token_delay=0.05),  # the third warm-up candidate, in wave 1
            3: Step(stream=sure, token_delay=0.01),
            4: Step(stream=sure, token_delay=0.01),
            5: Step(stream=sure, token_delay=0.01),
        }
    )
    async with Orchestrator(engine, rerankers=[MajorityVote(extract="number")]) as orch:
        result = await orch.generate("q", n=6, seed=1, prune=policy, until=stopping.Beta(0.999), wave=2)
    calls = {int(c.request_id.rsplit("-", 1)[1]): c for c in engine.history}
    assert [calls[i].tokens for i in range(6)] == [False, False, False, True, True, True]
    assert all(calls[i].finished_before >= 3 for i in (3, 4, 5))
    assert result.samples_used == 6 and not any(c.pruned for c in result.candidates)


async def test_cancelling_a_pruned_request_aborts_everything() -> None:
    steps = four()
    steps[3] = Step(stream=toks([(" x", 3.0)] * 500), token_delay=0.01)
    engine = scripted_by_index(steps)
    async with Orchestrator(engine) as orch:
        with anyio.move_on_after(0.3):
            await orch.generate("q", n=4, seed=1, prune=POLICY)
    assert any(rid.endswith("-3") for rid in engine.aborted) and engine.running == set()


def test_signals_cost_is_small_on_64_token_candidates() -> None:
    """Not a timing assertion: checks the signals of a 64-token top-5 candidate are computed whole."""
    stream = toks([(f"t{i}", 1.0 + (i % 7) / 3) for i in range(64)], k=5)
    cand = _finished(0, stream)
    from nbest.rerankers.confidence import signals

    out = signals(cand)
    assert set(out) == {"mean_confidence", "lowest_group", "tail", "bottom10", "self_certainty", "mean_logprob"}
    assert math.isfinite(out["lowest_group"])


def pruning_engines(options: EngineOptions) -> dict[str, Engine]:
    """Engine factory for the CLI: the four hand-made streams (candidate 2 is pruned)."""
    return {"default": scripted_by_index(four())}


def quiet_engines(options: EngineOptions) -> dict[str, Engine]:
    return {"default": NoTokens(name="quiet")}


def test_cli_run_shows_the_pruned_candidate(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from nbest.cli import main

    main(["run", "q", "-n", "4", "--seed", "1", "--prune", "0.5:2:2", "--json"], engine_factory=pruning_engines)
    result = json.loads(capsys.readouterr().out)
    pruned = [c for c in result["candidates"] if c["finish_reason"] == "pruned"]
    assert [(c["index"], c["num_tokens"], c["text"], c["rank"]) for c in pruned] == [(2, 3, "The answer is 7", None)]
    assert set(pruned[0]["signals"]) >= {"lowest_group", "mean_confidence"}
    monkeypatch.setenv("COLUMNS", "200")  # the table on one line per candidate
    main(["run", "q", "-n", "4", "--seed", "1", "--prune", "0.5:2:2"], engine_factory=pruning_engines)
    assert "[pruned after 3 tokens] The answer is 7" in capsys.readouterr().out


def test_cli_run_refuses_prune_on_an_engine_without_token_updates(capsys: pytest.CaptureFixture[str]) -> None:
    from nbest.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "q", "-n", "5", "--prune", "high"], engine_factory=quiet_engines)  # 4 warm-up, 1 to prune
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "cannot report tokens" in err


def test_cli_batch_prunes(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from pathlib import Path

    from nbest.cli import main

    folder = Path(str(tmp_path))
    (folder / "in.jsonl").write_text('{"id": "a", "prompt": "q", "seed": 1}\n')
    main(["batch", str(folder / "in.jsonl"), "-o", str(folder / "out.jsonl"), "-n", "4", "--prune", "0.5:2:2"],
         engine_factory=pruning_engines)  # fmt: skip
    (line,) = (folder / "out.jsonl").read_text().splitlines()
    result = json.loads(line)
    assert [c["index"] for c in result["candidates"] if c["finish_reason"] == "pruned"] == [2]
    assert result["usage"]["completion_tokens"] == 15


def test_replica_spec_carries_prune() -> None:
    from nbest.distributed import ReplicaSpec
    from nbest.distributed.replica import run_options

    spec = ReplicaSpec(engine_factory="tests.test_pruning:pruning_engines", prune="low:8")
    assert run_options(spec)["prune"] == Prune(keep=0.1, warmup=8, window=16)
    assert run_options(ReplicaSpec(engine_factory="m:f"))["prune"] is None
    with pytest.raises(ConfigError, match=r"prune\.keep"):
        ReplicaSpec(engine_factory="m:f", prune="2").check()
    with pytest.raises(ConfigError, match="prune"):
        ReplicaSpec(engine_factory="m:f", prune="0." + "9" * 100)


def test_blocking_generate_checks_prune_before_any_engine_starts() -> None:
    import nbest

    with pytest.raises(ConfigError, match="prune: expected a Prune policy"):
        nbest.generate("q", n=8, prune="0.9")  # type: ignore[arg-type]


async def test_pruning_on_an_openai_fleet() -> None:
    """The fleet engine streams tokens from its servers; a pruned candidate's stream is closed
    (a vLLM server aborts the request when its client goes away)."""
    import json

    import httpx

    from nbest.engines.openai import OpenAIEngine
    from tests.fake_openai import MODEL, FakeFleet, _stream

    fleet = FakeFleet("a:1", "b:1")
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("chat/completions"):
            return await original(request)
        body = json.loads(request.content)
        server = fleet.servers[request.url.netloc.decode()]
        server.bodies.append(body)
        # seed 101 hesitates (alternatives close to the sampled token), the others are sure
        sure = body["seed"] != 101
        lp, alt = (-0.05, -6.0) if sure else (-1.0, -1.2)
        tokens = ["The", "answer", "is", "4", "."] * 4
        content = [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": t, "logprob": lp}, {"token": "alt", "logprob": alt}]}
            for t in tokens
        ]
        usage = {"prompt_tokens": 7, "completion_tokens": len(tokens)}
        if not body.get("stream"):
            text = " ".join(tokens)
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": {"content": content}}
            return httpx.Response(200, json={"choices": [{**choice, "finish_reason": "stop"}], "usage": usage})
        pieces = [t if i == 0 else f" {t}" for i, t in enumerate(tokens)]
        chunks = [
            {"index": 0, "delta": {"content": piece}, "logprobs": {"content": [item]}}
            for piece, item in zip(pieces, content, strict=True)
        ]
        return _stream(server, chunks, "stop", usage)

    fleet.transport.handler = handle
    for server in fleet.servers.values():
        server.token_delay = 0.01
    fleet_engine = OpenAIEngine(fleet.urls, model=MODEL, transport=fleet.transport)
    policy = Prune(keep=1.0, warmup=1, window=2)
    async with Orchestrator(fleet_engine) as orch:
        result = await orch.generate("q", n=3, seed=100, prune=policy, max_tokens=32)
    by_index = {c.index: c for c in result.candidates}
    assert by_index[1].pruned and by_index[1].num_tokens == 2  # its first full window: well below the sure one's
    assert by_index[1].text == "The answer"
    assert not by_index[0].pruned and not by_index[2].pruned and by_index[2].num_tokens == 20
    assert sum(s.streams_closed for s in fleet.servers.values()) == 1
    assert sorted(int(str(b["seed"])) for s in fleet.servers.values() for b in s.bodies) == [100, 101, 102]
    assert all(b["top_logprobs"] == PRUNE_TOP_LOGPROBS for s in fleet.servers.values() for b in s.bodies)


async def test_a_deadline_during_warmup_times_out_the_waiting_candidates() -> None:
    steps = four()
    steps[0] = Step(stream=toks([(" x", 3.0)] * 100), token_delay=0.01)  # one second: past the deadline
    engine = scripted_by_index(steps)
    async with Orchestrator(engine) as orch:
        result = await orch.generate("q", n=4, seed=1, prune=POLICY, timeout=0.3)
    reasons = {c.index: c.finish_reason for c in result.candidates}
    assert reasons == {0: "timeout", 1: "stop", 2: "timeout", 3: "timeout"}
    called = sorted(int(call.request_id.rsplit("-", 1)[1]) for call in engine.history)
    assert called == [0, 1]  # the later ones never reached the engine
    assert engine.aborted == [f"{result.id}-0"] and engine.running == set()
