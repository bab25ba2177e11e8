"""Token updates (``generate(..., tokens=True)``) without a real engine: OpenAIEngine
against the fake fleet (streamed chunks with log-probabilities), VLLMEngine's
conversion of vLLM outputs, from hand-made outputs shaped like vLLM's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from nbest.engines.base import streams_tokens
from nbest.engines.openai import OpenAIEngine
from nbest.engines.vllm import VLLMEngine, _Deltas
from nbest.errors import GenerationError
from nbest.rerankers.confidence import ConfidenceTracker
from nbest.types import CandidateUpdate, ChatMessage, Prompt, SamplingParams
from tests.fake_openai import MODEL, FakeFleet, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT: Prompt = [ChatMessage(role="user", content="Hi")]


def engine(fleet: FakeFleet, **kwargs: Any) -> OpenAIEngine:
    return OpenAIEngine(fleet.urls, model=MODEL, transport=fleet.transport, backoff=0.05, max_backoff=0.1, **kwargs)


async def collect(
    e: OpenAIEngine | VLLMEngine, prompt: Prompt, params: SamplingParams, rid: str, **kw: Any
) -> list[CandidateUpdate]:
    return [u async for u in e.generate(prompt, params, rid, **kw)]


def without_news(update: CandidateUpdate) -> CandidateUpdate:
    return update.model_copy(update={"new_token_logprobs": None, "new_top_logprobs": None})


def test_both_engines_say_they_stream_tokens() -> None:
    assert streams_tokens(VLLMEngine.default()) and streams_tokens(OpenAIEngine("http://a:1/v1", model=MODEL))


# -- OpenAIEngine --------------------------------------------------------------


@pytest.mark.parametrize("prompt", [CHAT, "Hi"], ids=["chat", "text"])
@pytest.mark.parametrize("top", [0, 2])
@pytest.mark.parametrize("delay", [0.0, 0.01], ids=["one-body", "paced"])
async def test_openai_partial_updates_report_each_token_once_and_end_as_without_tokens(
    prompt: Prompt, top: int, delay: float
) -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = delay
    params = SamplingParams(seed=5, max_tokens=8, top_logprobs=top)
    async with engine(fleet) as e:
        (plain,) = await collect(e, prompt, params, "plain")
        updates = await collect(e, prompt, params, "tokens", tokens=True)
    *partials, final = updates
    # the fake answers "a:1 seed=5" in two tokens, one chunk each
    assert [(u.text, u.num_tokens, u.finished) for u in partials] == [("a:1", 1, False), ("a:1 seed=5", 2, False)]
    assert [u.new_token_logprobs for u in partials] == [[-0.5], [-0.5]]
    assert final.finished and final.new_token_logprobs == []
    assert without_news(final) == plain  # the same final update as without tokens
    seen = [lp for u in updates for lp in u.new_token_logprobs or ()]
    assert seen == final.token_logprobs == [-0.5, -0.5]
    if top:
        tops = [alts for u in updates for alts in u.new_top_logprobs or ()]
        assert tops == final.top_logprobs
        assert tops[0] == {"a:1": -0.5, "alt": -3.0}  # the sampled token among its alternatives
    else:
        assert all(u.new_top_logprobs is None for u in updates) and final.top_logprobs is None


async def test_openai_a_server_that_does_not_stream_gives_every_token_in_the_final_update() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].json_only = True
    params = SamplingParams(seed=1, max_tokens=8, top_logprobs=1)
    async with engine(fleet) as e:
        (update,) = await collect(e, CHAT, params, "r", tokens=True)
        async with engine(fleet, stream=False) as whole:
            (again,) = await collect(whole, CHAT, params, "r2", tokens=True)
    for u in (update, again):
        assert u.finished and u.new_token_logprobs == u.token_logprobs == [-0.5, -0.5]
        assert u.new_top_logprobs == u.top_logprobs and u.top_logprobs is not None


async def test_openai_confidence_tracker_fed_from_partial_updates_equals_the_final_lists() -> None:
    fleet = FakeFleet("a:1")
    params = SamplingParams(seed=3, max_tokens=8, top_logprobs=2)
    async with engine(fleet) as e:
        updates = await collect(e, CHAT, params, "r", tokens=True)
    live, after = ConfidenceTracker(window=1), ConfidenceTracker(window=1)
    for u in updates:
        for lp, alts in zip(u.new_token_logprobs or (), u.new_top_logprobs or (), strict=True):
            live.update(lp, alts)
    final = updates[-1]
    assert final.token_logprobs is not None and final.top_logprobs is not None
    for lp, alts in zip(final.token_logprobs, final.top_logprobs, strict=True):
        after.update(lp, alts)
    assert live.signals() == after.signals() and live.tokens == 2
    assert live.signals()["mean_confidence"] == pytest.approx((0.5 + 3.0) / 2)


async def test_openai_abort_between_updates_closes_the_stream_and_ends_with_the_text_so_far() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = 0.05
    params = SamplingParams(seed=9, max_tokens=8, top_logprobs=1)
    async with engine(fleet) as e:
        stream = e.generate(CHAT, params, "pruned", tokens=True)
        first = await anext(stream)
        assert first.text == "a:1" and not first.finished
        await e.abort("pruned")
        assert fleet["a:1"].streams_closed == 1  # closed by abort itself, before the reader reads on
        rest = [u async for u in stream]
    (final,) = rest
    assert (final.finished, final.finish_reason, final.text, final.num_tokens) == (True, "abort", "a:1", 1)
    assert final.new_token_logprobs == [] and final.new_top_logprobs == []
    assert e.endpoints[0].in_flight == 0


async def test_openai_abort_while_waiting_for_bytes_ends_the_wait() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = 30.0  # the second token would come much later
    params = SamplingParams(seed=9, max_tokens=8)
    async with engine(fleet) as e:
        updates: list[CandidateUpdate] = []

        async def read() -> None:
            async for u in e.generate(CHAT, params, "slow", tokens=True):
                updates.append(u)

        with anyio.fail_after(10):  # a hang guard: the abort ends a 30 s wait
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await until(lambda: bool(updates))
                await anyio.sleep(0.05)  # the reader waits for the next event now
                await e.abort("slow")
    assert [u.finish_reason for u in updates] == [None, "abort"]
    assert fleet["a:1"].streams_closed == 1 and e.endpoints[0].in_flight == 0


async def test_openai_closing_the_generator_closes_the_stream() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = 0.05
    async with engine(fleet) as e:
        stream = e.generate(CHAT, SamplingParams(seed=2, max_tokens=8), "closed", tokens=True)
        await anext(stream)
        await stream.aclose()
        assert fleet["a:1"].streams_closed == 1 and e.endpoints[0].in_flight == 0


async def test_openai_failure_before_the_first_token_moves_to_another_endpoint() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].cut_after = 0  # the connection drops before any event
    fleet["b:1"].cut_after = None
    params = SamplingParams(seed=4, max_tokens=8)
    async with engine(fleet) as e:
        e.endpoints[1].in_flight = 1  # a:1 is picked first
        updates = await collect(e, CHAT, params, "moved", tokens=True)
        e.endpoints[1].in_flight = 0
    assert updates[-1].text == "b:1 seed=4" and updates[-1].finish_reason == "stop"
    assert [lp for u in updates for lp in u.new_token_logprobs or ()] == [-0.5, -0.5]
    assert not e.endpoints[0].healthy  # the connection failure still counts against a:1


async def test_openai_failure_after_a_yielded_token_fails_the_candidate_without_retry() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].cut_after = 1  # one token, then the connection drops
    params = SamplingParams(seed=4, max_tokens=8)
    async with engine(fleet) as e:
        e.endpoints[1].in_flight = 1
        updates: list[CandidateUpdate] = []
        with pytest.raises(GenerationError, match=r"failed after 1 streamed token\(s\), which a retry would repeat"):
            async for u in e.generate(CHAT, params, "cut", tokens=True):
                updates.append(u)
        e.endpoints[1].in_flight = 0
    assert [u.text for u in updates] == ["a:1"]
    assert fleet["b:1"].served == []  # not retried
    assert not e.endpoints[0].healthy


async def test_openai_more_tokens_than_max_tokens_is_the_endpoints_fault() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = 0.01  # the first token is yielded before the second comes
    async with engine(fleet) as e:
        with pytest.raises(GenerationError, match="more tokens than max_tokens=1"):
            await collect(e, CHAT, SamplingParams(seed=1, max_tokens=1), "long", tokens=True)
    assert e.endpoints[0].strikes == 1


@pytest.mark.parametrize(
    "body",
    [
        b"data: " + b"x" * 3_000_000,  # one endless line: bounded by the byte limit, not by memory
        b'data: {"choices": [{"index": 0, "delta": {"content": "a"},'
        b' "logprobs": {"content": [{"token": "a", "logprob": NaN}]}}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a"}]}}]}\n\n',
        b'data: {"error": {"message": "engine died"}}\n\n',
        b"[" * 100_000,
    ],
    ids=["endless-line", "nan", "no-logprob", "error-event", "deep"],
)
async def test_openai_malformed_streams_move_before_any_token(body: bytes) -> None:
    fleet = FakeFleet("a:1", "b:1")
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        return await original(request)

    fleet.transport.handler = handle
    async with engine(fleet) as e:
        e.endpoints[1].in_flight = 1
        updates = await collect(e, CHAT, SamplingParams(seed=0, max_tokens=8), "bad", tokens=True)
        e.endpoints[1].in_flight = 0
    assert updates[-1].text == "b:1 seed=0"
    assert e.endpoints[0].strikes == 1 or not e.endpoints[0].healthy


async def test_openai_error_event_after_yielded_text_fails_the_candidate() -> None:
    fleet = FakeFleet("a:1")
    events = [
        {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a", "logprob": -1.0}]}}]},
        {"error": {"message": "engine died"}},
    ]

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("completions"):
            body = "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode()
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        return httpx.Response(200, json={"data": [{"id": MODEL}]})

    fleet.transport.handler = handle
    async with engine(fleet) as e:
        with pytest.raises(GenerationError, match="engine died"):
            await collect(e, CHAT, SamplingParams(max_tokens=8), "died", tokens=True)


# -- VLLMEngine: vLLM outputs shaped as AsyncLLM sends them ----------------------


def lp(value: float, text: str) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, decoded_token=text)


# three tokens: ids 11, 12, 13; alternatives by id (the sampled token first, as vLLM puts it)
TOKENS = [11, 12, 13]
ENTRIES: list[dict[int, SimpleNamespace]] = [
    {11: lp(-0.1, "The"), 20: lp(-2.5, "A")},
    {12: lp(-0.7, "\ufffd"), 21: lp(-0.9, "\ufffd"), 22: lp(-1.2, " cat")},  # two byte pieces, one text
    {13: lp(-1.5, " dog"), 23: lp(-1.0, " cat"), 24: lp(-1.1, " cat")},  # the sampled token is not the top one
]
TEXTS = ["The", "\ufffd", " dog"]


def output(ids: list[int], entries: list[dict[int, SimpleNamespace]], text: str, cum: float, done: bool) -> SimpleNamespace:
    completion = SimpleNamespace(
        token_ids=ids, text=text, logprobs=entries, cumulative_logprob=cum, finish_reason="length" if done else None
    )
    return SimpleNamespace(outputs=[completion], prompt_token_ids=[1, 2, 3, 4], finished=done)


def deltas(splits: list[int], top: bool = True) -> list[CandidateUpdate]:
    """The three tokens sent as deltas cut at ``splits``, with the cumulative logprob vLLM keeps."""
    conv, updates, start, cum = _Deltas(top), [], 0, 0.0
    for end in [*splits, len(TOKENS)]:
        for i in range(start, end):
            cum += ENTRIES[i][TOKENS[i]].logprob
        done = end == len(TOKENS)
        updates.append(conv.update(output(TOKENS[start:end], ENTRIES[start:end], "".join(TEXTS[start:end]), cum, done)))
        start = end
    return updates


EXPECTED_TOP = [{"The": -0.1, "A": -2.5}, {"\ufffd": -0.7, " cat": -1.2}, {" dog": -1.5, " cat": -1.0}]


@pytest.mark.parametrize("splits", [[1, 2], [2], [], [0, 1]], ids=["one-by-one", "merged", "all-at-end", "empty-delta"])
def test_vllm_deltas_concatenate_to_the_final_only_update(splits: list[int]) -> None:
    updates = deltas(splits)
    cum = sum(ENTRIES[i][t].logprob for i, t in enumerate(TOKENS))
    final_only = VLLMEngine._update(output(TOKENS, ENTRIES, "".join(TEXTS), cum, True), True)
    *partials, final = updates
    assert not any(u.finished for u in partials) and final.finished
    assert [lp for u in updates for lp in u.new_token_logprobs or ()] == [-0.1, -0.7, -1.5]
    assert [alts for u in updates for alts in u.new_top_logprobs or ()] == EXPECTED_TOP
    assert [u.num_tokens for u in partials] == [s for s in splits]
    assert without_news(final) == final_only
    assert final.cumulative_logprob == pytest.approx(-2.3) and final.prompt_tokens == 4
    assert all(u.token_logprobs is None for u in partials)  # the growing lists only at the end


def test_vllm_alternatives_with_the_same_text_keep_the_sampled_token_and_the_likelier_other() -> None:
    update = VLLMEngine._update(output(TOKENS, ENTRIES, "".join(TEXTS), -2.3, True), True)
    assert update.top_logprobs == EXPECTED_TOP
    assert update.token_logprobs == [-0.1, -0.7, -1.5]  # one per token, the sampled token's own


def test_vllm_without_alternatives_no_top_lists() -> None:
    sampled_only = [{t: e[t]} for t, e in zip(TOKENS, ENTRIES, strict=True)]
    update = VLLMEngine._update(output(TOKENS, sampled_only, "x", -2.3, True), False)
    assert update.top_logprobs is None and update.token_logprobs == [-0.1, -0.7, -1.5]
    assert all(u.new_top_logprobs is None for u in deltas([1], top=False))


def test_vllm_a_sampled_token_missing_from_its_entry_keeps_the_lists_aligned() -> None:
    entries = [dict(ENTRIES[0]), {21: lp(-0.9, "\ufffd"), 22: lp(-1.2, " cat")}, dict(ENTRIES[2])]
    update = VLLMEngine._update(output(TOKENS, entries, "x", -2.3, True), True)
    assert update.token_logprobs == [-0.1, -1.2, -1.5]  # at most as likely as the least likely alternative
    assert update.top_logprobs is not None and len(update.top_logprobs) == update.num_tokens == 3
    assert update.top_logprobs[1] == {"token_id:12": -1.2, "\ufffd": -0.9, " cat": -1.2}


class FakeAsyncLLM:
    """Just what VLLMEngine.generate uses of AsyncLLM; records whether its stream was closed."""

    errored = False

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def generate(self, prompt: object, params: object, request_id: str) -> AsyncIterator[SimpleNamespace]:
        try:
            for splits in ([0, 1], [1, 2], [2, 3]):
                a, b = splits
                yield output(TOKENS[a:b], ENTRIES[a:b], "".join(TEXTS[a:b]), 0.0, b == 3)
                await anyio.lowlevel.checkpoint()
        finally:
            self.closed.append(request_id)  # AsyncLLM aborts the request here when closed early


async def test_vllm_generate_with_tokens_and_closing_it_early_closes_vllms_stream() -> None:
    e = VLLMEngine.default()
    fake = FakeAsyncLLM()
    e._llm = fake  # type: ignore[assignment]
    e.sampling_params = lambda params, *, tokens=False: tokens  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=3, top_logprobs=2)
    updates = [u async for u in e.generate("Hi", params, "all", tokens=True)]
    assert [u.num_tokens for u in updates] == [1, 2, 3] and updates[-1].finished
    stream = e.generate("Hi", params, "early", tokens=True)
    await anext(stream)
    await stream.aclose()
    assert fake.closed == ["all", "early"]
    e._llm = None
